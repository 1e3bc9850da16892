//! Pools, migrations and the SQL of every domain, for SQLite and PostgreSQL.
//!
//! `sqlx::Any` cannot decode timestamps or UUIDs, so the pool is native and each query is written
//! once and compiled for both backends through [`on_tx!`] / [`on_pool!`]. Where the SQL must
//! differ, both versions stand side by side with [`Db::backend`]. SQL lives in this module only.

pub mod approvals;
pub mod assets;
pub mod audit;
pub mod calendar;
pub mod changes;
pub mod dbaccess;
pub mod directory;
pub mod gate;
pub mod keys;
pub mod notify;
pub mod password_resets;
pub mod role_requests;
pub mod tokens;
pub mod users;
pub mod vault;
pub mod watch;
pub mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

pub use watch::Epoch;

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The pool, this process's [`Epoch`] and, on SQLite, its queue of writers (see [`Db::begin`]).
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool, Arc<Epoch>, Arc<tokio::sync::Mutex<()>>),
    Postgres(PgPool, Arc<Epoch>),
}

/// A write transaction. On SQLite it is `BEGIN IMMEDIATE`, so read-then-write never deadlocks,
/// and it holds this process's writer turn until it ends. Its commit moves the [`Epoch`].
pub enum Tx {
    Sqlite(
        sqlx::Transaction<'static, Sqlite>,
        Arc<Epoch>,
        // The writer turn; `None` for a transaction that only reads ([`Db::begin_read`]).
        Option<tokio::sync::OwnedMutexGuard<()>>,
    ),
    Postgres(sqlx::Transaction<'static, Postgres>, Arc<Epoch>),
}

/// Runs `$body` with `$c` bound to the transaction's connection, once per backend.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t, ..) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t, _) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the pool, once per backend.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($c, ..) => $body,
            $crate::db::Db::Postgres($c, _) => $body,
        }
    };
}

/// Errors of the store, with constraint violations told apart from everything else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unique constraint violated")]
    Unique,
    #[error("not found")]
    NotFound,
    /// This process's turn (SQLite's writer, the audit chain) or a pooled connection did not
    /// come in time: the service is busy, the request may be tried again.
    #[error("busy: no turn within the wait")]
    Busy,
    #[error("database: {0}")]
    Sqlx(sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A stored value that is not one its column may hold (an unknown status, a list that is not
/// JSON): decoding the row fails with this, naming the column, instead of defaulting silently.
#[derive(Debug, thiserror::Error)]
#[error("{column} holds {value:?}, which is not a valid value")]
pub struct CorruptValue {
    pub column: &'static str,
    pub value: String,
}

impl CorruptValue {
    pub fn new(column: &'static str, value: impl Into<String>) -> Self {
        let value = value.into().chars().take(64).collect();
        CorruptValue { column, value }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Unique,
            _ => StoreError::Sqlx(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a SQLite writer waits for its turn in this process (as long as the busy timeout).
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// A pooled connection idle this long is pinged before use (it may have been cut, e.g. by a
/// PostgreSQL restart); one in steady use is not.
const IDLE_PING: Duration = Duration::from_secs(30);

/// Pool options shared by both backends. sqlx pings every connection it hands out by default:
/// a full round trip before each query. A failing query surfaces the error anyway, so only
/// connections that sat idle are checked.
fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::<DB>::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Waits (at most [`WRITER_WAIT`]) for this process's SQLite writer turn.
async fn sqlite_turn(
    writers: &Arc<tokio::sync::Mutex<()>>,
) -> Result<tokio::sync::OwnedMutexGuard<()>> {
    tokio::time::timeout(WRITER_WAIT, writers.clone().lock_owned())
        .await
        .map_err(|_| StoreError::Busy)
}

impl Db {
    /// Connects by URL scheme: `sqlite:` (file created if missing) or `postgres://`.
    pub async fn connect(url: &str) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // sqlx's SQLite worker thread hands rows over through a channel of 50: a month
                // of the calendar (~1,700 rows) stalled it 30 times, a thread switch each.
                .row_buffer_size(2048);
            let pool: SqlitePoolOptions = pool_options();
            let pool = pool
                .max_connections(8)
                .min_connections(1)
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool, Arc::default(), Arc::default()))
        } else {
            let opts = PgConnectOptions::from_str(url)?;
            let pool: PgPoolOptions = pool_options();
            let pool = pool
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Db::Postgres(pool, Arc::default()))
        }
    }

    /// For reading only (`changeguard audit verify`, maybe on a copy): SQLite is opened
    /// read-only and never created; PostgreSQL as usual (the reader's role decides).
    pub async fn connect_read_only(url: &str) -> Result<Db> {
        if !url.starts_with("sqlite:") {
            return Db::connect(url).await;
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .create_if_missing(false);
        let pool: SqlitePoolOptions = pool_options();
        let pool = pool.max_connections(2).connect_with(opts).await?;
        Ok(Db::Sqlite(pool, Arc::default(), Arc::default()))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(..) => Backend::Sqlite,
            Db::Postgres(..) => Backend::Postgres,
        }
    }

    /// This process's count of committed changes (see [`Epoch`]).
    pub fn epoch(&self) -> &Epoch {
        match self {
            Db::Sqlite(_, e, _) | Db::Postgres(_, e) => e,
        }
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(p, ..) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Db::Postgres(p, _) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// Starts a write transaction. SQLite has one writer at a time: here they wait their turn
    /// in order, without holding a pooled connection, instead of each taking a connection and
    /// sleeping in SQLite's busy handler (which starved readers of connections and gave
    /// writers second-long tails under load). Another process's writer is still waited for by
    /// the busy timeout.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(p, epoch, writers) => {
                let turn = sqlite_turn(writers).await?;
                Tx::Sqlite(
                    p.begin_with("BEGIN IMMEDIATE").await?,
                    epoch.clone(),
                    Some(turn),
                )
            }
            Db::Postgres(p, epoch) => Tx::Postgres(p.begin().await?, epoch.clone()),
        })
    }

    /// Starts a transaction that only reads (a consistent view for a check such as "may this
    /// person decide this stage now"): on SQLite a deferred `BEGIN` without the writer turn, so
    /// checks never queue behind, or hold up, the writers. Never write in it.
    pub async fn begin_read(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(p, epoch, _) => Tx::Sqlite(p.begin().await?, epoch.clone(), None),
            Db::Postgres(p, epoch) => Tx::Postgres(p.begin().await?, epoch.clone()),
        })
    }

    /// This process's SQLite writer turn, for a write that runs on the pool rather than in a
    /// [`Tx`] (a single UPDATE): without it, such a write would wait in SQLite's busy handler
    /// while queued transactions keep taking the lock. `None` on PostgreSQL.
    pub async fn write_turn(&self) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>> {
        match self {
            Db::Sqlite(_, _, writers) => {
                tokio::time::timeout(WRITER_WAIT, writers.clone().lock_owned())
                    .await
                    .map(Some)
                    .map_err(|_| StoreError::Busy)
            }
            Db::Postgres(..) => Ok(None),
        }
    }

    /// Database reachable?
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await);
    }
}

impl Tx {
    /// Commits, then moves the epoch: whatever was read before this commit is now stale for
    /// the caches of this process (other instances hear of it from the database, see [`watch`]).
    /// The epoch moves even if the commit fails or is cancelled midway: the database may have
    /// applied it all the same.
    /// Only a [`crate::deed::Deed`] has the seal: domain code commits through its deed.
    pub async fn commit(self, _seal: crate::deed::Seal) -> Result<()> {
        self.commit_in_store().await
    }

    /// The store's own transactions (the sender claiming its batch).
    pub(in crate::db) async fn commit_in_store(self) -> Result<()> {
        match self {
            Tx::Sqlite(t, epoch, _turn) => {
                let _moves = watch::AdvanceOnDrop(epoch);
                t.commit().await?;
            }
            Tx::Postgres(t, epoch) => {
                let _moves = watch::AdvanceOnDrop(epoch);
                t.commit().await?;
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(..) => Backend::Sqlite,
            Tx::Postgres(..) => Backend::Postgres,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn versions(dir: &str) -> BTreeSet<String> {
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.split('_').next().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let s = versions("migrations/sqlite");
        assert!(!s.is_empty());
        assert_eq!(s, versions("migrations/postgres"));
    }
}
