//! Appending to and reading the audit chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use std::sync::Arc;

use super::{Backend, Db, Result, StoreError, Tx};
use crate::audit::{
    Entry, Record, Sealer, Verification, Verifier, rows_beyond_head, truncate_micros,
};
use crate::{on_pool, on_tx};

macro_rules! cols {
    () => {
        "seq, at, actor_id, actor, action, target, outcome, code, reason, policy_ids, details, \
         request_id, prev_hash, hash"
    };
}

/// The chain's head as this process last committed it, and the turn to append to it.
///
/// The appends of one process take turns here, from the append until their transaction has
/// committed: they queue in the process instead of on the head row's lock in the database
/// (which every writer of every instance needs), and the head need not be read before each
/// append. What is remembered is only a guess: the append moves the head only if it still is
/// that (another instance or `changeguard` on the command line may have moved it) and reads
/// it, locked, when it is not. A guess never makes a wrong link; at worst one more read.
#[derive(Debug, Clone, Default)]
pub struct ChainHead(Arc<tokio::sync::Mutex<Option<Head>>>);

/// A position on the chain: the last entry's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// A transaction's turn on the chain: held until the transaction ends.
pub struct HeadTurn {
    known: tokio::sync::OwnedMutexGuard<Option<Head>>,
    /// The head after this transaction's appends (not committed yet).
    appended: Option<Head>,
}

/// How long an append waits for this process's turn on the chain before it gives up (a deed
/// stuck inside another's turn fails instead of hanging).
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl ChainHead {
    async fn turn(&self) -> Result<HeadTurn> {
        let known = tokio::time::timeout(TURN_WAIT, self.0.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Busy)?;
        Ok(HeadTurn {
            known,
            appended: None,
        })
    }
}

impl HeadTurn {
    /// The transaction committed: its last entry is the head now.
    pub fn committed(mut self) {
        if let Some(head) = self.appended.take() {
            *self.known = Some(head);
        }
    }
}

/// Appends `entry` inside `tx`: the entry commits or rolls back with what it records. The
/// transaction takes this process's `turn` on the chain (if it has not yet) and keeps it
/// until it ends; [`HeadTurn::committed`] after the commit.
pub async fn append(
    tx: &mut Tx,
    sealer: &Sealer,
    chain: &ChainHead,
    turn: &mut Option<HeadTurn>,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<i64> {
    let turn = match turn {
        Some(t) => t,
        None => turn.insert(chain.turn().await?),
    };
    let guess = turn.appended.clone().or_else(|| turn.known.clone());
    let prev = match guess {
        Some(head) => head,
        None => locked_head(tx).await?,
    };
    let mut record = sealed(sealer, entry, now, &prev);
    if !link(tx, &record, &prev).await? {
        // Moved by somebody else since: read it (and lock it) and link there.
        let prev = locked_head(tx).await?;
        record = sealed(sealer, entry, now, &prev);
        if !link(tx, &record, &prev).await? {
            return Err(StoreError::Sqlx(sqlx::Error::Protocol(
                "the audit head moved while locked".into(),
            )));
        }
    }
    turn.appended = Some(Head {
        seq: record.seq,
        hash: record.hash.clone(),
    });
    Ok(record.seq)
}

/// The head as the database holds it. PostgreSQL: locked, so appends from several instances
/// queue up; SQLite: the write transaction (BEGIN IMMEDIATE) already excludes other writers.
async fn locked_head(tx: &mut Tx) -> Result<Head> {
    let sql = match tx.backend() {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let (seq, hash) = on_tx!(tx, |c| sqlx::query_as::<_, (i64, String)>(sql)
        .fetch_one(c)
        .await)?;
    Ok(Head { seq, hash })
}

/// The entry as the record that follows `prev`, sealed.
fn sealed(sealer: &Sealer, entry: &Entry, now: DateTime<Utc>, prev: &Head) -> Record {
    let mut record = Record {
        seq: prev.seq + 1,
        at: truncate_micros(now),
        actor_id: entry.actor_id,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        outcome: entry.outcome.as_str().to_string(),
        code: entry.code.clone(),
        reason: entry.reason.clone(),
        policy_ids: serde_json::to_string(&entry.policy_ids).unwrap_or_else(|_| "[]".into()),
        details: entry.details.to_string(),
        request_id: entry.request_id.clone(),
        prev_hash: prev.hash.clone(),
        hash: String::new(),
    };
    record.hash = sealer.seal(&record);
    record
}

/// Stores `r` and moves the head to it, if the head still is `prev`; false (nothing written)
/// if it is not. On PostgreSQL one statement (the head's row lock is taken here and held to
/// the commit); on SQLite two, inside the one write transaction.
async fn link(tx: &mut Tx, r: &Record, prev: &Head) -> Result<bool> {
    const MOVE_HEAD: &str =
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4";
    const PG: &str = concat!(
        "WITH moved AS (UPDATE audit_head SET seq = $1, hash = $14 \
         WHERE id = 1 AND seq = $1 - 1 AND hash = $13 RETURNING seq) \
         INSERT INTO audit_log (",
        cols!(),
        ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM moved"
    );
    const SQLITE: &str = concat!(
        "INSERT INTO audit_log (",
        cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    if tx.backend() == Backend::Sqlite {
        let moved = on_tx!(tx, |c| sqlx::query(MOVE_HEAD)
            .bind(r.seq)
            .bind(&r.hash)
            .bind(prev.seq)
            .bind(&prev.hash)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        if moved != 1 {
            return Ok(false);
        }
    }
    let sql = match tx.backend() {
        Backend::Postgres => PG,
        Backend::Sqlite => SQLITE,
    };
    let written = on_tx!(tx, |c| sqlx::query(sql)
        .bind(r.seq)
        .bind(r.at)
        .bind(r.actor_id)
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.target)
        .bind(&r.outcome)
        .bind(&r.code)
        .bind(&r.reason)
        .bind(&r.policy_ids)
        .bind(&r.details)
        .bind(&r.request_id)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .execute(c)
        .await
        .map(|d| d.rows_affected()))?;
    Ok(written == 1)
}

/// Newest first; `before` is an exclusive sequence number.
pub async fn list(db: &Db, limit: i64, before: Option<i64>) -> Result<Vec<Record>> {
    let sql = concat!(
        "SELECT ",
        cols!(),
        " FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Record>(sql)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

/// Walks the chain in pages, up to the head as it was when the walk began (entries appended
/// meanwhile are left for the next walk, so a busy service gives no false alarm). Then, in one
/// statement (one snapshot, so a concurrent append cannot look like one), compares the head
/// with the highest sequence number stored: entries beyond the head mean it was moved back.
pub async fn verify(db: &Db, sealer: &Sealer) -> Result<Verification> {
    const PAGE: i64 = 2000;
    let head = on_pool!(db, |p| sqlx::query_as::<_, (i64, String)>(
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    )
    .fetch_one(p)
    .await)?;
    let sql = concat!(
        "SELECT ",
        cols!(),
        " FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
    );
    let mut verifier = Verifier::new(sealer);
    let mut after = 0i64;
    loop {
        let rows = on_pool!(db, |p| sqlx::query_as::<_, Record>(sql)
            .bind(after)
            .bind(head.0)
            .bind(PAGE)
            .fetch_all(p)
            .await)?;
        for r in &rows {
            verifier.push(r);
        }
        match rows.last() {
            Some(last) if !verifier.is_done() && rows.len() as i64 == PAGE => after = last.seq,
            _ => break,
        }
    }
    let mut v = verifier.finish(head);
    let (head_now, last) = head_and_last(db).await?;
    v.add(rows_beyond_head(head_now, last));
    Ok(v)
}

/// The head's sequence number and the highest one stored, read in one statement.
pub async fn head_and_last(db: &Db) -> Result<(i64, i64)> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, (i64, i64)>(
        "SELECT h.seq, COALESCE((SELECT MAX(seq) FROM audit_log), 0) FROM audit_head h WHERE h.id = 1"
    )
    .fetch_one(p)
    .await
    })?)
}

/// The stored MAC of each of `seqs` that exists.
pub async fn hashes_at(db: &Db, seqs: &[i64]) -> Result<BTreeMap<i64, String>> {
    let mut out = BTreeMap::new();
    for &seq in seqs {
        if out.contains_key(&seq) {
            continue;
        }
        let hash = on_pool!(db, |p| sqlx::query_scalar::<_, String>(
            "SELECT hash FROM audit_log WHERE seq = $1"
        )
        .bind(seq)
        .fetch_optional(p)
        .await)?;
        if let Some(h) = hash {
            out.insert(seq, h);
        }
    }
    Ok(out)
}
