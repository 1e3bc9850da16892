//! How many refused writes of one person the trail takes: every refusal is audited up to
//! [`PER_WINDOW`] per person in each [`WINDOW_SECS`] window, the rest only counted
//! (`audit_refusals_suppressed_total`) and logged once per window. So a signed-in person (or a
//! stolen session) scripting refused writes cannot grow the trail without bound, while no
//! person at work comes near the limit. Counted per instance, on the server's clock.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Refusals of one person audited per window.
pub const PER_WINDOW: u32 = 200;
/// The window, in seconds (10 minutes).
pub const WINDOW_SECS: i64 = 600;
/// People remembered before the windows that are over are forgotten.
const REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct RefusalBudget {
    counts: Mutex<HashMap<String, (i64, u32)>>,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Audit,
    /// Over the budget: count it; `first` is the first one of this window (log it).
    Suppress {
        first: bool,
    },
}

impl RefusalBudget {
    /// The verdict on a refusal of `actor` at `now`.
    pub fn take(&self, actor: &str, now: DateTime<Utc>) -> Verdict {
        let window = now.timestamp().div_euclid(WINDOW_SECS);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= REMEMBERED {
            counts.retain(|_, (w, _)| *w == window);
        }
        let entry = counts.entry(actor.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 <= PER_WINDOW {
            Verdict::Audit
        } else {
            Verdict::Suppress {
                first: entry.1 == PER_WINDOW + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn a_person_is_audited_up_to_the_budget_in_each_window() {
        let b = RefusalBudget::default();
        let t = DateTime::<Utc>::from_timestamp(WINDOW_SECS * 1000, 0).unwrap();
        for _ in 0..PER_WINDOW {
            assert_eq!(b.take("op.zhang", t), Verdict::Audit);
        }
        assert_eq!(b.take("op.zhang", t), Verdict::Suppress { first: true });
        assert_eq!(b.take("op.zhang", t), Verdict::Suppress { first: false });
        // Somebody else has a budget of their own.
        assert_eq!(b.take("op.li", t), Verdict::Audit);
        // The next window starts afresh.
        let later = t + TimeDelta::seconds(WINDOW_SECS);
        assert_eq!(b.take("op.zhang", later), Verdict::Audit);
    }
}
