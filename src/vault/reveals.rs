//! The reveal: a secret for the assignee of a change in progress inside its window, or under a standing grant, with a fresh second factor; audited and notified.

use super::grants::{credential_facts, rotation_notice};
use super::*;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    /// Why the secret is needed (recorded in the audit trail).
    pub reason: String,
    /// The change it is needed for; default: the caller's change in progress on its system.
    pub change_id: Option<i64>,
    /// A fresh TOTP code (or an unused recovery code).
    pub totp: Option<String>,
}

/// The secret, once; the response is `Cache-Control: no-store`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Revealed {
    #[schema(value_type = String)]
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    pub credential_id: i64,
    pub version: i64,
    pub account: String,
    /// The change it was revealed for (then "rotate after use" is set).
    pub change_id: Option<i64>,
    /// The standing grant that allowed it, when not a change.
    pub via_standing_grant: bool,
    pub rotate_after_use: bool,
    /// Audit sequence number of this reveal.
    pub audit_seq: i64,
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

/// The facts the reveal policy looks at, for one user and one credential, now.
pub struct RevealFacts {
    pub window: Option<WindowRow>,
    /// Now is before the window's planned end (plus the grace).
    pub within_window: bool,
    pub standing_grant: bool,
}

impl RevealFacts {
    fn facts(&self) -> Facts {
        Facts {
            change: self.window.as_ref().map(|w| WindowFacts {
                assignee: w.assignee_id,
                in_progress: w.status == "in_progress",
                within_window: self.within_window,
                touches_system: w.touches,
            }),
            standing_grant: self.standing_grant,
            ..Facts::default()
        }
    }
}

impl RevealFacts {
    fn new(app: &App, window: Option<WindowRow>, standing_grant: bool, now: DateTime<Utc>) -> Self {
        let grace = TimeDelta::minutes(app.policies.security.reveal_grace_minutes.max(0));
        let within_window = window.as_ref().is_some_and(|w| now < w.planned_end + grace);
        RevealFacts {
            window,
            within_window,
            standing_grant,
        }
    }
}

/// The facts as they stand, for showing who could reveal (the decision itself reads them in its
/// transaction: [`reveal_facts_held`]).
pub async fn reveal_facts(
    app: &App,
    user_id: i64,
    c: &Credential,
    now: DateTime<Utc>,
) -> Result<RevealFacts> {
    let window = db::windows_for(&app.db, &c.system, user_id)
        .await?
        .into_iter()
        .next();
    let standing_grant = db::has_active_grant(&app.db, c.id, user_id, now).await?;
    Ok(RevealFacts::new(app, window, standing_grant, now))
}

/// The facts read inside the transaction that decides the reveal, so a revocation, a
/// completion or a cancellation racing it either comes after it or is seen by it.
async fn reveal_facts_held(
    app: &App,
    tx: &mut crate::db::Tx,
    user_id: i64,
    c: &Credential,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<RevealFacts> {
    let window = match change_id {
        Some(id) => db::window_held(tx, id, &c.system).await?,
        None => db::windows_for_held(tx, &c.system, user_id)
            .await?
            .into_iter()
            .next(),
    };
    let standing_grant = db::has_active_grant_held(tx, c.id, user_id, now).await?;
    Ok(RevealFacts::new(app, window, standing_grant, now))
}

/// The policy's decision for `who` revealing `c`.
pub fn decide(app: &App, who: &Principal, c: &Credential, f: &RevealFacts) -> Decision {
    app.policies.authorizer.decide(
        who,
        "credential.reveal",
        &Resource::Credential(CredentialFacts {
            id: c.id,
            system: &c.system,
            department: &c.department,
        }),
        &f.facts(),
    )
}

/// `None` when `who` may reveal `c` now by the policies, else the refusal a reveal would meet,
/// in the reveal rule's words: for a page that says why not before anybody asks. (The second
/// factor is checked by the reveal itself.)
pub async fn reveal_refusal(
    app: &App,
    who: &Principal,
    c: &Credential,
    now: DateTime<Utc>,
) -> Result<Option<Error>> {
    let f = reveal_facts(app, who.user_id, c, now).await?;
    let d = decide(app, who, c, &f);
    Ok((!d.allowed).then(|| refusal(who, &f, d, None)))
}

/// Why a reveal was refused, in the reveal rule's words.
fn refusal(who: &Principal, f: &RevealFacts, d: Decision, asked_change: Option<i64>) -> Error {
    let ids = d.policy_ids;
    match &f.window {
        None if asked_change.is_some() => refuse(
            "no_change_window",
            "指定的变更不存在 / The given change does not exist",
            ids,
        ),
        None => refuse(
            "no_change_window",
            "该凭据所属系统没有进行中的变更 / No change touching this credential's system is in progress",
            ids,
        ),
        Some(w) if !w.touches => refuse(
            "change_not_for_system",
            "该变更不涉及此凭据所属的系统 / The change does not touch this credential's system",
            ids,
        ),
        Some(w) if w.status != "in_progress" => {
            let (zh, en) = crate::changes::words::status(&w.status);
            refuse(
                "change_not_in_progress",
                &format!(
                    "变更 {} 不在实施中（{zh}） / Change {} is not in progress ({en})",
                    w.id, w.id
                ),
                ids,
            )
        }
        Some(w) if !f.within_window => refuse(
            "change_overdue",
            &format!(
                "变更 {} 已超过计划结束时间，须先完成或改期后才能取用凭据 / Change {} is past its planned end: complete or reschedule it before revealing",
                w.id, w.id
            ),
            ids,
        ),
        Some(w) if w.assignee_id != who.user_id => refuse(
            "not_assignee",
            "只有变更的实施人可以取用凭据 / Only the change's assignee may reveal its credentials",
            ids,
        ),
        Some(_) => Error::forbidden(ids),
    }
}

/// A credential's account and secret for the server's own use (just-in-time database
/// accounts are made with it): never handed to a person, so no reveal entry; the deed that
/// uses it is audited.
pub(crate) async fn server_secret(
    app: &App,
    tx: &mut crate::db::Tx,
    id: i64,
) -> Result<(String, SecretString)> {
    let c = db::get_credential(&app.db, id).await.map_err(not_found)?;
    let (version, sealed) = db::sealed_secret(tx, id).await?;
    let secret = app
        .vault
        .open(tx, binding(id, version), &sealed)
        .await
        .map_err(keyring::crypto_error)?;
    Ok((c.account, secret))
}

pub async fn reveal(app: &App, who: &Principal, id: i64, req: RevealRequest) -> Result<Revealed> {
    let now = app.now();
    text::required("reason", &req.reason, 500, Lines::Many)?;
    let mut tx = Deed::open(app).await?;
    // The credential too is read (and on PostgreSQL held) by the deciding transaction.
    let c = db::get_credential_tx(&mut tx, id)
        .await
        .map_err(not_found)?;
    let facts = reveal_facts_held(app, &mut tx, who.user_id, &c, req.change_id, now).await?;
    let decision = decide(app, who, &c, &facts);
    let via_change = facts
        .window
        .as_ref()
        .filter(|w| w.assignee_id == who.user_id && w.status == "in_progress" && w.touches)
        .map(|w| w.id);
    let mut entry = Entry::by(who, "credential.reveal", format!("credential:{id}"))
        .with_reason(req.reason.trim())
        .with_policies(&decision.policy_ids)
        .with_details(json!({
            "name": c.name, "system": c.system, "account": c.account,
            "change_id": req.change_id.or(facts.window.as_ref().map(|w| w.id)),
            "standing_grant": facts.standing_grant,
        }));

    let refused = if decision.allowed {
        factor::check(app, &mut tx, who.user_id, req.totp.as_deref(), false, now)
            .await?
            .err()
    } else {
        Some(refusal(who, &facts, decision, req.change_id))
    };
    if let Some(error) = refused {
        entry.outcome = Outcome::Refused;
        entry.code = Some(error.code().to_string());
        tx.commit(&entry, now).await?;
        return Err(error.audited());
    }
    // Decrypt inside the transaction, hand out only after it committed with the audit entry.
    let (version, sealed) = db::sealed_secret(&mut tx, id).await?;
    entry.details["version"] = json!(version);
    let secret = match app.vault.open(&mut tx, binding(id, version), &sealed).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(credential = id, version, error = %e, "a stored credential does not decrypt");
            let error = keyring::crypto_error(e);
            entry.outcome = Outcome::Refused;
            entry.code = Some(error.code().to_string());
            tx.commit(&entry, now).await?;
            return Err(error.audited());
        }
    };
    db::mark_revealed(&mut tx, id, who.user_id, via_change, now).await?;
    let recorded = tx.record_first(&entry, now).await?;
    let revealer = Parties {
        assignee: Some(who.user_id),
        ..Parties::default()
    };
    let notice = credential_facts(
        app,
        Bulletin::new(
            app,
            &format!("凭据已取用：{}", c.name),
            &format!("Credential revealed: {}", c.name),
        ),
        &c,
    )
    .fact(app, "取用人", "Revealed by", crate::assets::person(who))
    .fact(
        app,
        "依据",
        "Under",
        match via_change {
            Some(change) => format!(
                "{} #{change}",
                app.notifier.templates.pick("变更", "change")
            ),
            None => app
                .notifier
                .templates
                .pick("长期授权", "standing grant")
                .to_string(),
        },
    )
    .fact(app, "事由", "Reason", req.reason.trim())
    .fact(app, "审计序号", "Audit entry", recorded.seq());
    notify::enqueue_bulletin(app, &mut tx, "credential_revealed", revealer, &notice, now).await?;
    if via_change.is_some() {
        let reminder = rotation_notice(app, &c);
        notify::enqueue_bulletin(app, &mut tx, "rotation_reminder", revealer, &reminder, now)
            .await?;
    }
    let seq = recorded.seq();
    tx.commit_recorded(recorded).await?;
    Ok(Revealed {
        secret,
        credential_id: id,
        version,
        account: c.account,
        change_id: via_change,
        via_standing_grant: via_change.is_none(),
        rotate_after_use: via_change.is_some() || c.rotate_after_use,
        audit_seq: seq,
    })
}
