//! Appending to and reading the audit chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Backend, Db, Result, Tx};
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

/// Appends `entry` inside `tx`: the entry commits or rolls back with what it records.
pub async fn append(
    tx: &mut Tx,
    sealer: &Sealer,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<i64> {
    // PostgreSQL: lock the head row so appends from several instances queue up.
    // SQLite: the write transaction (BEGIN IMMEDIATE) already excludes other writers.
    let head_sql = match tx.backend() {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let (last_seq, last_hash) = on_tx!(tx, |c| sqlx::query_as::<_, (i64, String)>(head_sql)
        .fetch_one(c)
        .await)?;
    let mut record = Record {
        seq: last_seq + 1,
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
        prev_hash: last_hash,
        hash: String::new(),
    };
    record.hash = sealer.seal(&record);
    let sql = concat!(
        "INSERT INTO audit_log (",
        cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    let r = &record;
    on_tx!(tx, |c| sqlx::query(sql)
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
        .map(|r| r.rows_affected()))?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1"
    )
    .bind(r.seq)
    .bind(&r.hash)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(record.seq)
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
