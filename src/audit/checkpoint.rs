//! Checkpoints: the chain's head (seq and MAC) witnessed outside the database.
//!
//! The head row (`audit_head`) lives in the same database as the rows: whoever deletes the
//! last entries can move it back too, and the chain still verifies. A checkpoint is a line of
//! an append-only file (`CHANGEGUARD_AUDIT_CHECKPOINTS`, default beside the key files):
//!
//! ```text
//! {"seq":42,"mac":"<hex>","at":"2026-12-01T18:00:00.000000Z","kid":"<hex>","sig":"<base64url>"}
//! ```
//!
//! signed with Ed25519 by a key of its own (`changeguard.checkpoint.key`, or
//! `CHANGEGUARD_AUDIT_CHECKPOINT_KEY`): neither the audit MAC key nor anything in the database
//! can make one. A checkpoint is written after every scheduled verification that finds the
//! trail intact and on demand; verification compares the trail with every checkpoint of the
//! file: a trail that ends before a checkpoint, or holds another MAC at its entry, is found.
//! Removing lines from the file is what the file's append-only place (and the copy in the daily
//! digest e-mail) guards against; the signature keeps anybody from adding checkpoints that
//! would raise false alarms or vouch for a rewritten trail.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Finding, Verification};
use crate::keys::KeyBytes;

/// Key file of the checkpoint signing key (a 32-byte Ed25519 seed, hex), in the key directory.
pub const KEY_FILE: &str = "changeguard.checkpoint.key";
/// Default name of the checkpoint file, in the key directory.
pub const FILE: &str = "changeguard.audit-checkpoints.jsonl";

const DOMAIN: &str = "changeguard audit checkpoint v1";

/// One checkpoint, as a line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The head's sequence number when it was witnessed.
    pub seq: i64,
    /// The MAC (`hash`) of that entry, hex.
    pub mac: String,
    /// When it was witnessed (RFC 3339, UTC, microseconds); signed as written.
    pub at: String,
    /// The signing key's id: the first 8 bytes of SHA-256 of its public key, hex.
    pub kid: String,
    /// Ed25519 signature (base64url, no padding) of `changeguard audit checkpoint v1`, seq,
    /// mac and at, one a line.
    pub sig: String,
}

impl Checkpoint {
    /// The MAC shortened for people (the first 16 hex digits).
    pub fn short_mac(&self) -> &str {
        self.mac.get(..16).unwrap_or(&self.mac)
    }
}

fn message(seq: i64, mac: &str, at: &str) -> String {
    format!("{DOMAIN}\n{seq}\n{mac}\n{at}")
}

fn kid_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Signs checkpoints. `Debug` prints the key id only.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointSigner({})", self.verifier().kid)
    }
}

impl CheckpointSigner {
    /// From a 32-byte seed (longer key material: its first 32 bytes).
    pub fn from_key(key: &KeyBytes) -> Option<CheckpointSigner> {
        let seed: [u8; 32] = key.expose_secret().get(..32)?.try_into().ok()?;
        Some(CheckpointSigner {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier::new(self.key.verifying_key())
    }

    /// A checkpoint of the entry `seq` whose MAC is `mac`, witnessed at `at`.
    pub fn sign(&self, seq: i64, mac: &str, at: DateTime<Utc>) -> Checkpoint {
        let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let sig = self.key.sign(message(seq, mac, &at).as_bytes());
        Checkpoint {
            seq,
            mac: mac.to_string(),
            at,
            kid: self.verifier().kid,
            sig: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        }
    }
}

/// Checks checkpoint signatures: the public half only.
#[derive(Debug, Clone)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
    pub kid: String,
}

impl CheckpointVerifier {
    pub fn new(key: VerifyingKey) -> CheckpointVerifier {
        CheckpointVerifier {
            kid: kid_of(&key),
            key,
        }
    }

    /// From the public key, 64 hex digits (as `changeguard audit checkpoint` prints it).
    pub fn from_hex(s: &str) -> Option<CheckpointVerifier> {
        let bytes: [u8; 32] = hex::decode(s.trim()).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(Self::new)
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    pub fn verifies(&self, c: &Checkpoint) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&c.sig) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        DateTime::parse_from_rfc3339(&c.at).is_ok()
            && self
                .key
                .verify_strict(message(c.seq, &c.mac, &c.at).as_bytes(), &sig)
                .is_ok()
    }
}

/// The checkpoints of a file's text whose signatures verify, with their line numbers (from 1),
/// and a finding for every other non-blank line.
pub fn parse(text: &str, verifier: &CheckpointVerifier) -> (Vec<(i64, Checkpoint)>, Vec<Finding>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as i64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line) {
            Err(_) => bad.push(Finding::new(
                "checkpoint_malformed",
                None,
                Some(n),
                format!("检查点文件第 {n} 行不是检查点 / line {n} of the checkpoint file is not a checkpoint"),
            )),
            Ok(c) if !verifier.verifies(&c) => bad.push(Finding::new(
                "checkpoint_signature",
                None,
                Some(n),
                format!(
                    "检查点文件第 {n} 行（第 {} 条）签名无效{} / line {n} of the checkpoint file \
                     (entry {}): the signature does not verify{}",
                    c.seq,
                    if c.kid == verifier.kid { "" } else { "，非本密钥所签" },
                    c.seq,
                    if c.kid == verifier.kid {
                        String::new()
                    } else {
                        format!(" (signed by key {}, not {})", c.kid, verifier.kid)
                    }
                ),
            )),
            Ok(c) => good.push((n, c)),
        }
    }
    (good, bad)
}

/// Compares the trail with checkpoints: `last` is the highest sequence number stored,
/// `hashes` the stored MAC of each checkpoint's entry (absent: no such entry).
pub fn compare(
    checkpoints: &[(i64, Checkpoint)],
    last: i64,
    hashes: &BTreeMap<i64, String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (n, c) in checkpoints {
        match hashes.get(&c.seq) {
            _ if c.seq > last => out.push(Finding::new(
                "checkpoint_shorter",
                Some(last + 1),
                Some(*n),
                format!(
                    "审计轨迹比检查点短：轨迹止于第 {last} 条，而检查点（第 {n} 行，{}）见证了第 {} 条 / \
                     the trail is shorter than a checkpoint: it ends at entry {last} but the \
                     checkpoint on line {n} (written {}) witnessed entry {}",
                    c.at, c.seq, c.at, c.seq
                ),
            )),
            Some(h) if *h == c.mac => {}
            found => out.push(Finding::new(
                "checkpoint_differs",
                Some(c.seq),
                Some(*n),
                format!(
                    "第 {} 条记录与检查点（第 {n} 行，{}）不符：{} / entry {} differs from the \
                     checkpoint on line {n} (written {}): {}",
                    c.seq,
                    c.at,
                    if found.is_some() { "MAC 不同" } else { "记录缺失" },
                    c.seq,
                    c.at,
                    if found.is_some() {
                        "another MAC"
                    } else {
                        "the entry is missing"
                    }
                ),
            )),
        }
    }
    out
}

/// Reads the checkpoint file; a missing file holds no checkpoint.
pub fn read(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

/// The finding for a checkpoint file that cannot be read. The path and the error go to the log
/// only: the finding is served to API clients.
pub fn unreadable(path: &Path, e: &std::io::Error) -> Finding {
    tracing::error!(path = %path.display(), error = %e, "cannot read the audit checkpoint file");
    Finding::new(
        "checkpoints_unreadable",
        None,
        None,
        "无法读取检查点文件（原因见服务日志） / cannot read the checkpoint file (see the service log)"
            .to_string(),
    )
}

/// Appends a checkpoint as one line, in one write to a file opened for appending only
/// (O_APPEND: several instances may append to the same file), then syncs it to disk. A new file
/// is created (mode 0640) and its directory synced.
pub fn append(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let existed = path.exists();
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    let mut f = opts.open(path)?;
    let mut line = serde_json::to_string(c).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    if !existed {
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

/// The last checkpoint of the file whose signature verifies (the digest shows it).
pub fn latest(path: &Path, verifier: &CheckpointVerifier) -> Option<Checkpoint> {
    let text = read(path).ok()?;
    parse(&text, verifier).0.pop().map(|(_, c)| c)
}

/// Adds to `v` what the checkpoint file says: a finding per checkpoint the trail contradicts
/// and per line that is no valid checkpoint. `last` and `hashes` as in [`compare`].
pub fn check(
    v: &mut Verification,
    text: &str,
    verifier: &CheckpointVerifier,
    last: i64,
    hashes: &BTreeMap<i64, String>,
) {
    let (good, bad) = parse(text, verifier);
    v.checkpoints = good.len() as i64;
    let contradicted = compare(&good, last, hashes);
    v.add(bad.into_iter().chain(contradicted));
}

/// Verifies the trail ([`crate::db::audit::verify`]) and compares it with every checkpoint of
/// the file at `path` (a missing file holds none).
pub async fn verify(
    db: &crate::db::Db,
    sealer: &super::Sealer,
    path: &Path,
    verifier: &CheckpointVerifier,
) -> crate::db::Result<Verification> {
    let mut v = crate::db::audit::verify(db, sealer).await?;
    let text = match read(path) {
        Ok(t) => t,
        Err(e) => {
            v.add([unreadable(path, &e)]);
            return Ok(v);
        }
    };
    let seqs: Vec<i64> = parse(&text, verifier)
        .0
        .iter()
        .map(|(_, c)| c.seq)
        .collect();
    let (_, last) = crate::db::audit::head_and_last(db).await?;
    let hashes = crate::db::audit::hashes_at(db, &seqs).await?;
    check(&mut v, &text, verifier, last, &hashes);
    Ok(v)
}

/// Where this instance writes checkpoints, and its signing key.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub path: std::path::PathBuf,
    pub signer: CheckpointSigner,
}

/// Why no checkpoint was written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The trail does not verify: a checkpoint would vouch for it.
    #[error("{}", .0.reason.clone().unwrap_or_default())]
    Broken(Box<Verification>),
    #[error("checkpoint file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::db::StoreError),
}

impl Checkpoints {
    /// Verifies the trail against the file; intact, appends a checkpoint of the verified head.
    pub async fn write(
        &self,
        db: &crate::db::Db,
        sealer: &super::Sealer,
        now: DateTime<Utc>,
    ) -> Result<(Checkpoint, Verification), CheckpointError> {
        let v = verify(db, sealer, &self.path, &self.signer.verifier()).await?;
        if !v.ok {
            return Err(CheckpointError::Broken(Box::new(v)));
        }
        let c = self.signer.sign(v.entries, &v.mac, now);
        append(&self.path, &c).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok((c, v))
    }
}

/// A checkpoint written on demand, as the API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Written {
    /// The line appended to the checkpoint file.
    pub checkpoint: Checkpoint,
    /// The signing key's public half (hex), for `changeguard audit verify
    /// --checkpoint-public-key`.
    pub public_key: String,
    /// Checkpoints of the file the trail was compared with before this one was written.
    pub checkpoints_compared: i64,
    /// Sequence number of the audit entry that records this checkpoint (after its head).
    pub audit_seq: i64,
}

/// `POST /api/v1/audit/checkpoints`: verifies the trail against the checkpoint file; intact,
/// appends a checkpoint of its head, then records the deed (the file line first: an entry never
/// claims a checkpoint that was not written). Broken: `409 audit_chain_broken`, nothing written.
pub async fn on_demand(
    app: &crate::App,
    who: &crate::rbac::Principal,
) -> crate::error::Result<Written> {
    use crate::error::Error;
    let now = app.now();
    let (c, v) = match app.checkpoints.write(&app.db, &app.sealer, now).await {
        Ok(r) => r,
        Err(CheckpointError::Broken(v)) => {
            return Err(Error::conflict(
                "audit_chain_broken",
                format!(
                    "审计轨迹未通过校验，未写入检查点 / The audit trail does not verify; no \
                     checkpoint written: {}",
                    v.reason.unwrap_or_default()
                ),
            ));
        }
        Err(CheckpointError::Store(e)) => return Err(e.into()),
        Err(e @ CheckpointError::Io { .. }) => return Err(Error::Internal(e.into())),
    };
    let entry = super::Entry::by(who, "audit.checkpoint", "audit_log".to_string()).with_details(
        serde_json::json!({"seq": c.seq, "mac": c.mac, "at": c.at, "kid": c.kid,
                           "checkpoints_compared": v.checkpoints}),
    );
    let audit_seq = crate::deed::Deed::open(app)
        .await?
        .commit(&entry, now)
        .await?;
    Ok(Written {
        public_key: app.checkpoints.signer.verifier().public_hex(),
        checkpoint: c,
        checkpoints_compared: v.checkpoints,
        audit_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    fn signer(b: u8) -> CheckpointSigner {
        CheckpointSigner::from_key(&SecretBox::new(Box::new(vec![b; 32]))).unwrap()
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn hashes(n: i64) -> BTreeMap<i64, String> {
        (1..=n).map(|s| (s, format!("{s:064x}"))).collect()
    }

    fn lines(cs: &[Checkpoint]) -> String {
        cs.iter()
            .map(|c| serde_json::to_string(c).unwrap() + "\n")
            .collect()
    }

    fn codes(text: &str, last: i64, h: &BTreeMap<i64, String>) -> Vec<(String, Option<i64>)> {
        let s = signer(1);
        let mut v = crate::audit::Verifier::new(&crate::audit::Sealer::new(SecretBox::new(
            Box::new(vec![0u8; 32]),
        )))
        .finish((0, crate::audit::GENESIS.into()));
        check(&mut v, text, &s.verifier(), last, h);
        assert_eq!(v.ok, v.findings.is_empty());
        v.findings.into_iter().map(|f| (f.code, f.line)).collect()
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_round_trips() {
        let s = signer(1);
        let c = s.sign(5, &format!("{:064x}", 5), at());
        assert!(s.verifier().verifies(&c));
        let back: Checkpoint = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(!signer(2).verifier().verifies(&c));
        let public = CheckpointVerifier::from_hex(&s.verifier().public_hex()).unwrap();
        assert!(public.verifies(&c));
        assert_eq!(c.short_mac().len(), 16);
    }

    #[test]
    fn checkpoints_matching_the_trail_are_fine() {
        let s = signer(1);
        let h = hashes(10);
        let text = lines(&[s.sign(3, &h[&3], at()), s.sign(10, &h[&10], at())]);
        assert!(codes(&text, 10, &h).is_empty());
        // A trail that grew since is fine too.
        let mut longer = hashes(12);
        longer.retain(|k, _| [3, 10].contains(k));
        assert!(codes(&text, 12, &longer).is_empty());
        assert!(codes("", 10, &h).is_empty());
    }

    #[test]
    fn a_shorter_or_different_trail_is_found() {
        let s = signer(1);
        let h = hashes(10);
        let text = lines(&[s.sign(3, &h[&3], at()), s.sign(10, &h[&10], at())]);
        // The last 3 entries deleted and the head moved back: the chain alone is consistent.
        let mut short = h.clone();
        short.retain(|k, _| *k <= 7);
        assert_eq!(
            codes(&text, 7, &short),
            vec![("checkpoint_shorter".to_string(), Some(2))]
        );
        // A rewritten trail (same length, other MACs from entry 2 on).
        let mut other = h.clone();
        for (k, v) in other.iter_mut() {
            if *k >= 2 {
                *v = "f".repeat(64);
            }
        }
        assert_eq!(
            codes(&text, 10, &other),
            vec![
                ("checkpoint_differs".to_string(), Some(1)),
                ("checkpoint_differs".to_string(), Some(2))
            ]
        );
        // An entry missing inside the trail.
        let mut gap = h.clone();
        gap.remove(&3);
        assert_eq!(
            codes(&text, 10, &gap),
            vec![("checkpoint_differs".to_string(), Some(1))]
        );
    }

    #[test]
    fn tampered_foreign_and_malformed_lines_are_reported() {
        let s = signer(1);
        let h = hashes(10);
        let mut edited = s.sign(10, &h[&10], at());
        edited.seq = 4;
        edited.mac = h[&4].clone();
        let foreign = signer(2).sign(5, &h[&5], at());
        let text = format!(
            "{}not json\n\n{}",
            lines(&[s.sign(2, &h[&2], at()), edited]),
            lines(&[foreign])
        );
        assert_eq!(
            codes(&text, 10, &h),
            vec![
                ("checkpoint_signature".to_string(), Some(2)),
                ("checkpoint_malformed".to_string(), Some(3)),
                ("checkpoint_signature".to_string(), Some(5)),
            ]
        );
    }

    #[test]
    fn appended_lines_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE);
        let s = signer(1);
        let h = hashes(3);
        append(&path, &s.sign(1, &h[&1], at())).unwrap();
        append(&path, &s.sign(3, &h[&3], at())).unwrap();
        let text = read(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(latest(&path, &s.verifier()).unwrap().seq, 3);
        assert!(read(&dir.path().join("none")).unwrap().is_empty());
    }
}
