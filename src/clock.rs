//! Time, injected at the edge. The domain never reads the clock itself; the shipped binary only
//! ever uses [`SystemClock`] (there is no switch to set the time). Tests of pure logic pass
//! fixed instants as arguments.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock, truncated to microseconds (both databases keep those).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        crate::audit::truncate_micros(Utc::now())
    }
}
