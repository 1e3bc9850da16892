//! The audit trail: an append-only, gap-free, MAC-chained log.
//!
//! Each entry's `hash` is HMAC-SHA256, keyed with a key that is never stored in the database,
//! over the previous entry's hash and the entry's own canonical content. Editing, deleting or
//! reordering any row in the database breaks the chain; somebody with database access but
//! without the key cannot forge a consistent one. `audit_head` keeps the last sequence number
//! and hash, so a removed tail is detected too, and entries after the head (a head moved
//! back) are reported.
//!
//! Somebody who deletes the tail AND moves the head back leaves a consistent chain; so does
//! somebody holding the key who rewrites it. Neither can undo what was witnessed outside the
//! database: [`checkpoint`] writes signed (seq, MAC) checkpoints to an append-only file, and
//! the daily digest e-mails the latest one.

pub mod checkpoint;
pub mod refusal_budget;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use crate::keys::KeyBytes;

/// The hash that precedes the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was carried out.
    Ok,
    /// The action was refused (401, 403, 409, 422, …); nothing changed.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        }
    }
}

/// What to record. Never put a password, token or secret in here.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub policy_ids: Vec<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

impl Entry {
    /// A successful action by `actor`.
    pub fn ok(
        actor: Option<(i64, &str)>,
        action: &str,
        target: impl Into<Option<String>>,
    ) -> Entry {
        Entry {
            actor_id: actor.map(|a| a.0),
            actor: actor.map(|a| a.1.to_string()),
            action: action.to_string(),
            target: target.into(),
            outcome: Outcome::Ok,
            code: None,
            reason: None,
            policy_ids: Vec::new(),
            details: serde_json::Value::Object(Default::default()),
            request_id: None,
        }
    }

    /// A successful action by `who`, decided by the policies that permitted the route (a deed
    /// that asks Cedar itself replaces them with [`Entry::with_policies`]).
    pub fn by(
        who: &crate::rbac::Principal,
        action: &str,
        target: impl Into<Option<String>>,
    ) -> Entry {
        Entry::ok(Some((who.user_id, &who.actor_name())), action, target)
            .with_policies(&who.permitted_by)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Entry {
        self.details = details;
        self
    }

    pub fn with_policies(mut self, ids: &[String]) -> Entry {
        self.policy_ids = ids.to_vec();
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Entry {
        self.reason = Some(reason.into());
        self
    }
}

/// A stored entry, as read back.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Record {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    /// JSON array of the Cedar policy ids that decided.
    pub policy_ids: String,
    /// JSON object with action-specific facts.
    pub details: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Seals entries with the audit key.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<KeyBytes>,
}

impl Sealer {
    pub fn new(key: KeyBytes) -> Sealer {
        Sealer {
            key: std::sync::Arc::new(key),
        }
    }

    /// MAC over the previous hash and the canonical content of `r` (its own `hash` excluded).
    pub fn seal(&self, r: &Record) -> String {
        let canonical = serde_json::json!([
            r.seq,
            canonical_time(r.at),
            r.actor_id,
            r.actor,
            r.action,
            r.target,
            r.outcome,
            r.code,
            r.reason,
            r.policy_ids,
            r.details,
            r.request_id,
        ]);
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(r.prev_hash.as_bytes());
        mac.update(b"\n");
        mac.update(canonical.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl Sealer {
    /// A MAC of `data` for another `purpose` than the trail (domain-separated from the entries'
    /// MACs): a value only this server's key can compute, so a copy of the database alone
    /// gives nothing to guess against (recovery codes).
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"changeguard keyed digest\0");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }
}

// HMAC accepts keys of any length; this cannot happen.
#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 accepts any key length")
}

/// Timestamps are kept to the microsecond, the finer of the two databases' common precision.
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

fn canonical_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One thing wrong with the trail, with a stable `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// `chain_broken` (an entry edited, removed or moved), `head_mismatch` (the head names a
    /// missing entry or another hash), `rows_beyond_head` (entries after the head: the head was
    /// moved back), `checkpoint_shorter` (the trail ends before a checkpoint),
    /// `checkpoint_differs` (the entry at a checkpoint has another MAC), `checkpoint_signature`
    /// (a checkpoint whose signature does not verify), `checkpoint_malformed` (a line that is
    /// no checkpoint), `checkpoints_unreadable` (the checkpoint file cannot be read).
    pub code: String,
    /// The entry concerned, if any.
    pub seq: Option<i64>,
    /// The line of the checkpoint file concerned, if any (from 1).
    pub line: Option<i64>,
    /// 中文 / English.
    pub reason: String,
}

impl Finding {
    pub fn new(code: &str, seq: Option<i64>, line: Option<i64>, reason: String) -> Finding {
        Finding {
            code: code.to_string(),
            seq,
            line,
            reason,
        }
    }
}

/// Result of walking the chain (and comparing it with the checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// No finding.
    pub ok: bool,
    /// Entries verified, from the first up to the head (or the first bad entry).
    pub entries: i64,
    /// MAC of the last verified entry: what a checkpoint of this verification witnesses.
    pub mac: String,
    /// Sequence number of the first entry that does not verify (of the first finding that
    /// names one).
    pub first_bad_entry: Option<i64>,
    /// Why it does not verify (the first finding's reason).
    pub reason: Option<String>,
    /// Checkpoints compared with the trail (signed lines of the checkpoint file).
    pub checkpoints: i64,
    /// Everything wrong, in the order found.
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Adds findings and recomputes `ok`, `first_bad_entry` and `reason`.
    pub fn add(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
        self.ok = self.findings.is_empty();
        self.first_bad_entry = self.findings.iter().find_map(|f| f.seq);
        self.reason = self.findings.first().map(|f| f.reason.clone());
    }
}

/// Checks entries in order; call [`Verifier::push`] for each record, then [`Verifier::finish`].
pub struct Verifier<'a> {
    sealer: &'a Sealer,
    expected_seq: i64,
    prev_hash: String,
    bad: Option<(i64, String)>,
}

impl<'a> Verifier<'a> {
    pub fn new(sealer: &'a Sealer) -> Self {
        Verifier {
            sealer,
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
            bad: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.bad.is_some()
    }

    pub fn push(&mut self, r: &Record) {
        if self.bad.is_some() {
            return;
        }
        let problem = if r.seq != self.expected_seq {
            Some(format!(
                "序号从 {} 跳到 {} / sequence jumps from {} to {}",
                self.expected_seq - 1,
                r.seq,
                self.expected_seq - 1,
                r.seq
            ))
        } else if r.prev_hash != self.prev_hash {
            Some("未链接到前一条记录 / does not link to the previous entry".to_string())
        } else if self.sealer.seal(r) != r.hash {
            Some("内容与其 MAC 不符 / content does not match its MAC".to_string())
        } else {
            None
        };
        match problem {
            Some(reason) => self.bad = Some((r.seq.min(self.expected_seq), reason)),
            None => {
                self.expected_seq += 1;
                self.prev_hash = r.hash.clone();
            }
        }
    }

    /// `head` is the (seq, hash) recorded in `audit_head`.
    pub fn finish(self, head: (i64, String)) -> Verification {
        let entries = self.expected_seq - 1;
        let mut v = Verification {
            ok: true,
            entries,
            mac: self.prev_hash.clone(),
            first_bad_entry: None,
            reason: None,
            checkpoints: 0,
            findings: Vec::new(),
        };
        if let Some((seq, reason)) = self.bad {
            v.add([Finding::new("chain_broken", Some(seq), None, reason)]);
            return v;
        }
        if head.0 > entries {
            v.add([Finding::new(
                "head_mismatch",
                Some(entries + 1),
                None,
                format!(
                    "链头记录第 {} 条，但轨迹止于第 {entries} 条：链头指向不存在的记录 / \
                     the head records entry {} but the chain ends at entry {entries}: the head \
                     points to a missing entry",
                    head.0, head.0
                ),
            )]);
        } else if head.0 != entries || head.1 != self.prev_hash {
            v.add([Finding::new(
                "head_mismatch",
                Some(entries + 1),
                None,
                format!(
                    "轨迹止于第 {entries} 条，但链头记录第 {} 条（散列值不符） / the chain ends at \
                     entry {entries} but its head records entry {} with another hash",
                    head.0, head.0
                ),
            )]);
        }
        v
    }
}

/// The finding for entries after the head (`last` is the highest sequence number stored): the
/// head was moved back, hiding them (and every later append collides with them).
pub fn rows_beyond_head(head: i64, last: i64) -> Option<Finding> {
    (last > head).then(|| {
        Finding::new(
            "rows_beyond_head",
            Some(head + 1),
            None,
            format!(
                "第 {} 至 {last} 条记录位于链头（第 {head} 条）之后：链头被回拨 / entries {} to \
                 {last} lie beyond the head (entry {head}): the head was moved back",
                head + 1,
                head + 1
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    fn sealer() -> Sealer {
        Sealer::new(SecretBox::new(Box::new(vec![1u8; 32])))
    }

    fn chain(n: i64) -> Vec<Record> {
        let s = sealer();
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = Record {
                    seq,
                    at: DateTime::from_timestamp(1_700_000_000 + seq, 123_456_000).unwrap(),
                    actor_id: Some(1),
                    actor: Some("admin".into()),
                    action: "user.manage".into(),
                    target: Some(format!("user:{seq}")),
                    outcome: "ok".into(),
                    code: None,
                    reason: None,
                    policy_ids: "[\"role.admin\"]".into(),
                    details: "{}".into(),
                    request_id: None,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = s.seal(&r);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn verify(rows: &[Record], head: (i64, String)) -> Verification {
        let s = sealer();
        let mut v = Verifier::new(&s);
        rows.iter().for_each(|r| v.push(r));
        v.finish(head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = chain(5);
        let head = (5, rows[4].hash.clone());
        assert!(verify(&rows, head).ok);
    }

    #[test]
    fn edit_delete_reorder_and_truncation_are_detected() {
        let rows = chain(5);
        let head = (5, rows[4].hash.clone());

        let mut edited = rows.clone();
        edited[2].target = Some("user:999".into());
        assert_eq!(verify(&edited, head.clone()).first_bad_entry, Some(3));

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted, head.clone()).first_bad_entry, Some(2));

        let mut swapped = rows.clone();
        swapped.swap(1, 3);
        assert_eq!(verify(&swapped, head.clone()).first_bad_entry, Some(2));

        let truncated = &rows[..4];
        assert_eq!(verify(truncated, head.clone()).first_bad_entry, Some(5));

        // Re-sealing with another key is detected as well.
        let other = Sealer::new(SecretBox::new(Box::new(vec![2u8; 32])));
        let mut forged = rows.clone();
        forged[4].reason = Some("forged".into());
        forged[4].hash = other.seal(&forged[4]);
        assert_eq!(
            verify(&forged, (5, forged[4].hash.clone())).first_bad_entry,
            Some(5)
        );
    }

    #[test]
    fn a_head_moved_back_or_pointing_past_the_end_is_reported() {
        let rows = chain(5);
        // Head moved back to entry 3 with entry 3's hash, rows 4 and 5 left: the walk up to
        // the head is consistent; the rows beyond it are the finding.
        let v = verify(&rows[..3], (3, rows[2].hash.clone()));
        assert!(v.ok);
        let f = rows_beyond_head(3, 5).unwrap();
        assert_eq!((f.code.as_str(), f.seq), ("rows_beyond_head", Some(4)));
        assert!(
            f.reason.contains("entries 4 to 5 lie beyond the head"),
            "{}",
            f.reason
        );
        assert!(rows_beyond_head(5, 5).is_none());
        // The head names entry 5 but the trail ends at 4.
        let v = verify(&rows[..4], (5, rows[4].hash.clone()));
        assert_eq!(v.findings[0].code, "head_mismatch");
        assert!(v.reason.unwrap().contains("points to a missing entry"));
        // Findings accumulate; the first bad entry is the first one that names an entry.
        let mut v = verify(&rows, (5, rows[4].hash.clone()));
        v.add([Finding::new(
            "checkpoint_signature",
            None,
            Some(1),
            "x".into(),
        )]);
        v.add(rows_beyond_head(5, 7));
        assert!(!v.ok);
        assert_eq!(v.first_bad_entry, Some(6));
        assert_eq!(v.reason.as_deref(), Some("x"));
    }
}
