//! Knowing when stored data changed, so that nothing this process caches outlives it.
//!
//! [`Epoch`] is a counter that moves after every write transaction this process commits
//! ([`super::Tx::commit`]) and whenever the database reports a commit by somebody else:
//! - **PostgreSQL**: triggers on `users`, `sessions` and `role_grants` (migration 0007) send
//!   `NOTIFY changeguard_auth` at commit, whoever writes (another instance, an operator in
//!   `psql`); [`spawn`] listens on a connection of its own.
//! - **SQLite**: [`spawn`] reads `PRAGMA data_version`, which changes with every commit made
//!   through another connection (another process included), every [`SQLITE_POLL`].
//!
//! A cache entry records the epoch read *before* its data was read and is used only while the
//! epoch has not moved. While nobody watches (not started yet, connection to the database lost)
//! [`Epoch::current`] is `None`: nothing may be served from a cache then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, SqlitePool};

use super::Db;

/// The channel the PostgreSQL triggers notify.
pub const CHANNEL: &str = "changeguard_auth";

/// How often the SQLite watcher looks for commits of other processes.
pub const SQLITE_POLL: Duration = Duration::from_millis(200);

/// A PostgreSQL watcher that heard nothing for this long checks its connection.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// Pause before a lost watcher connects again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Epoch {
    value: AtomicU64,
    watching: AtomicBool,
}

impl Epoch {
    /// The epoch now, or `None` while changes by others would go unnoticed.
    pub fn current(&self) -> Option<u64> {
        if self.watching.load(Ordering::SeqCst) {
            Some(self.value.load(Ordering::SeqCst))
        } else {
            None
        }
    }

    /// Something may have changed: everything read before is stale.
    pub fn advance(&self) {
        self.value.fetch_add(1, Ordering::SeqCst);
    }

    /// The watcher hears every change from now on. What was read before is stale: changes
    /// while nobody listened were missed.
    fn start_watching(&self) {
        self.advance();
        self.watching.store(true, Ordering::SeqCst);
    }

    /// The watcher went deaf: stop serving cached reads at once.
    fn stop_watching(&self) {
        self.advance();
        self.watching.store(false, Ordering::SeqCst);
    }
}

/// Moves the epoch when dropped: after a commit, whether it succeeded, failed or was cancelled.
pub(super) struct AdvanceOnDrop(pub(super) Arc<Epoch>);

impl Drop for AdvanceOnDrop {
    fn drop(&mut self) {
        self.0.advance();
    }
}

/// Stops serving cached reads when the watcher task ends (aborted at shutdown, or panicked).
struct DeafOnDrop(Arc<Epoch>);

impl Drop for DeafOnDrop {
    fn drop(&mut self) {
        self.0.stop_watching();
    }
}

/// Starts this process's watcher of the database; abort the handle to stop it.
pub fn spawn(db: &Db) -> tokio::task::JoinHandle<()> {
    match db {
        Db::Sqlite(pool, epoch, _) => tokio::spawn(watch_sqlite(pool.clone(), epoch.clone())),
        Db::Postgres(pool, epoch) => tokio::spawn(watch_postgres(pool.clone(), epoch.clone())),
    }
}

async fn watch_postgres(pool: PgPool, epoch: Arc<Epoch>) {
    let _deaf = DeafOnDrop(epoch.clone());
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                epoch.start_watching();
                loop {
                    // A connection cut without a word (a half-open TCP connection) would wait
                    // forever: after a quiet spell, ask the server something.
                    let next = match tokio::time::timeout(PROBE_AFTER, listener.try_recv()).await {
                        Ok(next) => next,
                        Err(_) => match probe(&mut listener).await {
                            Ok(()) => continue,
                            Err(e) => Err(e),
                        },
                    };
                    match next {
                        Ok(Some(_)) => epoch.advance(),
                        Ok(None) => {
                            epoch.stop_watching();
                            tracing::warn!("database watcher: connection lost; reconnecting");
                            break;
                        }
                        Err(e) => {
                            epoch.stop_watching();
                            tracing::warn!(error = %e, "database watcher failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                epoch.stop_watching();
                tracing::warn!(error = %e, "database watcher cannot listen; retrying");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn probe(listener: &mut PgListener) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(PROBE_AFTER, sqlx::query("SELECT 1").execute(listener)).await {
        Ok(done) => done.map(|_| ()),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn watch_sqlite(pool: SqlitePool, epoch: Arc<Epoch>) {
    let _deaf = DeafOnDrop(epoch.clone());
    loop {
        match pool.acquire().await {
            Ok(conn) => {
                // A connection of its own: `data_version` counts the commits of the others.
                let mut conn = conn.detach();
                let mut last = None;
                loop {
                    match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                        .fetch_one(&mut conn)
                        .await
                    {
                        Ok(version) => {
                            if last.is_none() {
                                epoch.start_watching();
                            } else if last != Some(version) {
                                epoch.advance();
                            }
                            last = Some(version);
                        }
                        Err(e) => {
                            epoch.stop_watching();
                            tracing::warn!(error = %e, "database watcher failed; reconnecting");
                            break;
                        }
                    }
                    tokio::time::sleep(SQLITE_POLL).await;
                }
            }
            Err(e) => {
                epoch.stop_watching();
                tracing::warn!(error = %e, "database watcher cannot connect; retrying");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_current_while_nobody_watches() {
        let e = Epoch::default();
        assert_eq!(e.current(), None);
        e.start_watching();
        let a = e.current().unwrap();
        e.advance();
        let b = e.current().unwrap();
        assert_ne!(a, b);
        e.stop_watching();
        assert_eq!(e.current(), None);
        e.start_watching();
        assert_ne!(
            e.current(),
            Some(b),
            "a gap in watching makes earlier reads stale"
        );
    }
}
