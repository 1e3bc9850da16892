//! Sessions read once and kept while nothing could have changed them.
//!
//! Every request names its session, and answering it needs the session, the user and the
//! grants in force: one database read, the largest part of a cheap request's cost. The answer
//! is kept in memory under the session id with the [`Epoch`] read *before* the database was,
//! and is served again only while
//! - the epoch has not moved: no write transaction of this process has committed since, and
//!   the database watcher has reported no commit by anybody else (on PostgreSQL, of the
//!   `users`, `sessions` or `role_grants` tables; see [`crate::db::watch`]);
//! - the session has not ended and no grant in force has expired (`valid_until`);
//! - it is younger than [`MAX_AGE`] (a last bound should a connection die without anybody
//!   noticing).
//!
//! So logout, disabling a user, a changed password and a revoked role are seen by the next
//! request on the instance that made them, exactly as without a cache; another instance sees
//! them when the database's notice reaches it (measured: see the README). Off with
//! `CHANGEGUARD_SESSION_CACHE=false`: every request reads the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::db::users::SessionUser;

/// The longest an answer is kept, whatever else holds.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// More sessions than this: the stale ones are dropped, then everything.
const CAPACITY: usize = 10_000;

struct Entry {
    epoch: u64,
    read_at: Instant,
    found: Arc<SessionUser>,
}

#[derive(Default)]
pub struct SessionCache {
    enabled: bool,
    entries: RwLock<HashMap<String, Entry>>,
    hits: AtomicU64,
}

impl SessionCache {
    pub fn new(enabled: bool) -> SessionCache {
        SessionCache {
            enabled,
            entries: RwLock::default(),
            hits: AtomicU64::default(),
        }
    }

    /// Requests answered from the cache so far (also `changeguard_session_cache_hits_total`).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The answer read for `session` at `epoch`, if it still holds at `now`.
    pub fn get(
        &self,
        session: &str,
        epoch: Option<u64>,
        now: DateTime<Utc>,
    ) -> Option<Arc<SessionUser>> {
        let epoch = epoch.filter(|_| self.enabled)?;
        let entries = self.entries.read().ok()?;
        let e = entries.get(session)?;
        let hit = e.epoch == epoch && now < e.found.valid_until && e.read_at.elapsed() < MAX_AGE;
        if !hit {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("changeguard_session_cache_hits_total").increment(1);
        Some(e.found.clone())
    }

    /// Keeps what was read for `session`; `epoch` is the one read before reading it.
    pub fn put(&self, session: &str, epoch: Option<u64>, found: Arc<SessionUser>) {
        let Some(epoch) = epoch.filter(|_| self.enabled) else {
            return;
        };
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.epoch == epoch && e.read_at.elapsed() < MAX_AGE);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            session.to_string(),
            Entry {
                epoch,
                read_at: Instant::now(),
                found,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::db::users::User;

    fn found(valid_until: DateTime<Utc>) -> Arc<SessionUser> {
        let now = Utc::now();
        Arc::new(SessionUser {
            user: User {
                id: 1,
                username: "op".into(),
                display_name: "操作员".into(),
                department: "科技部".into(),
                email: "op@bank.example".into(),
                active: true,
                kind: crate::db::users::AccountKind::Person,
                created_at: now,
                updated_at: now,
                password_temporary_until: None,
            },
            roles: vec!["tech_operator".into()],
            valid_until,
            scope: crate::db::users::SessionScope::Full,
        })
    }

    #[test]
    fn an_answer_holds_only_at_its_epoch_and_before_it_runs_out() {
        let now = Utc::now();
        let cache = SessionCache::new(true);
        cache.put("s", Some(7), found(now + TimeDelta::minutes(5)));
        assert!(cache.get("s", Some(7), now).is_some());
        assert!(cache.get("s", Some(8), now).is_none(), "epoch moved");
        assert!(cache.get("s", None, now).is_none(), "nobody watching");
        assert!(cache.get("t", Some(7), now).is_none(), "another session");
        assert!(
            cache
                .get("s", Some(7), now + TimeDelta::minutes(5))
                .is_none(),
            "session over or a grant expired"
        );
    }

    #[test]
    fn nothing_is_kept_when_off_or_unwatched() {
        let now = Utc::now();
        let off = SessionCache::new(false);
        off.put("s", Some(1), found(now + TimeDelta::minutes(5)));
        assert!(off.get("s", Some(1), now).is_none());
        let on = SessionCache::new(true);
        on.put("s", None, found(now + TimeDelta::minutes(5)));
        assert!(on.get("s", Some(0), now).is_none());
    }

    #[test]
    fn it_stays_bounded() {
        let now = Utc::now();
        let cache = SessionCache::new(true);
        for i in 0..CAPACITY + 5 {
            cache.put(&i.to_string(), Some(1), found(now + TimeDelta::minutes(5)));
        }
        assert!(cache.entries.read().unwrap().len() <= CAPACITY);
    }
}
