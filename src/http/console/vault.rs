//! 凭据保管 / The vault in the console: the credentials with their rotation state and whether
//! the reader may reveal each now (and if not, why, in the reveal rule's words); one
//! credential's page with the reveal (a reason and a one-time code), rotation, standing grants
//! and the access log. Same domain functions and permissions as the API.
//!
//! A revealed secret is in the answer to the reveal's POST only. The page's script hides it
//! after [`SHOW_SECS`] (or at once, on request): it removes the secret from the document and
//! replaces the history entry with the credential's page, so neither the DOM, a reload nor the
//! back button brings it back (every console answer is `Cache-Control: no-store`).

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::inbox::name_of;
use super::pages::{error_page, frame, local_time, not_permitted, refused, render, with};
use super::{Lang, Session};
use crate::App;
use crate::db::vault::CredentialGrant;
use crate::error::Error;
use crate::vault::{
    self, CreateGrant, CredentialView, RevealRequest, Revealed, RevokeGrant, RotateCredential,
    words,
};

const TITLE: &str = "凭据保管 / Credential vault";
/// How long a revealed secret stays on the page.
pub const SHOW_SECS: u32 = 60;

fn pick(lang: Lang, (zh, en): (&str, &str)) -> String {
    lang.tr(zh, en).to_string()
}

/// The rotation state in words.
fn rotation(s: &Session, app: &App, v: &CredentialView) -> Value {
    let lang = s.lang;
    let tz = app.policies.change.timezone;
    let c = &v.credential;
    let text = if c.rotate_after_use {
        match c.rotate_reason_change_id {
            Some(id) => format!(
                "{} #{id}",
                lang.tr("使用后须轮换：变更", "to rotate after use for change")
            ),
            None => lang.tr("使用后须轮换", "to rotate after use").to_string(),
        }
    } else {
        match (v.rotation_due, v.rotation_due_at) {
            (true, Some(at)) => format!(
                "{} {}",
                lang.tr("已到期，应于", "overdue since"),
                lang.moment(at, tz)
            ),
            (_, Some(at)) => format!(
                "{} {}",
                lang.tr("下次轮换", "next rotation by"),
                lang.moment(at, tz)
            ),
            (_, None) => lang.tr("不定期轮换", "no rotation interval").to_string(),
        }
    };
    json!({"due": v.rotation_due, "text": text})
}

fn credential_row(s: &Session, app: &App, v: &CredentialView) -> Value {
    let tz = app.policies.change.timezone;
    let c = &v.credential;
    json!({
        "id": c.id, "name": c.name, "system": c.system, "account": c.account,
        "kind": pick(s.lang, words::kind(&c.kind)), "department": c.department,
        "version": c.version, "rotation": rotation(s, app, v),
        "managed": c.target_database_id.is_some(),
        "last_revealed": c.last_revealed_at.map(|t| s.lang.moment(t, tz)),
        "last_revealed_by": c.last_revealed_by,
        "secret_changed_at": s.lang.moment(c.secret_changed_at, tz),
    })
}

/// Whether the reader may reveal `v` now: `{allowed, why}` (only for holders of
/// `credential.reveal`; others are never offered a reveal).
async fn reveal_state(app: &App, s: &Session, v: &CredentialView) -> Result<Value, Error> {
    if !s.may(app, "credential.reveal") {
        return Ok(json!(null));
    }
    let refusal = vault::reveal_refusal(app, &s.who, &v.credential, app.now()).await?;
    Ok(match refusal {
        None => json!({"allowed": true}),
        Some(e) => json!({"allowed": false, "why": s.lang.pick(&e.to_string())}),
    })
}

/// `GET /console/vault`: the credentials.
pub async fn list(State(app): State<App>, s: Session) -> Response {
    if !s.may(&app, "credential.read") {
        return not_permitted(&app, &s);
    }
    let all = match vault::list(&app).await {
        Ok(l) => l,
        Err(e) => return error_page(&app, Some(&s), s.lang, e),
    };
    let mut rows = Vec::with_capacity(all.len());
    for v in &all {
        let mut row = credential_row(&s, &app, v);
        match reveal_state(&app, &s, v).await {
            Ok(r) => row["reveal"] = r,
            Err(e) => return error_page(&app, Some(&s), s.lang, e),
        }
        rows.push(row);
    }
    let ctx = with(frame(&app, &s, TITLE), json!({"credentials": rows}));
    render("vault.html", ctx, StatusCode::OK)
}

/// `GET /console/vault/{id}`: one credential.
pub async fn show(State(app): State<App>, s: Session, Path(id): Path<i64>) -> Response {
    page(&app, &s, id, json!({}), StatusCode::OK).await
}

fn grant_state(lang: Lang, g: &CredentialGrant, now: DateTime<Utc>) -> (&'static str, String) {
    if g.revoked_at.is_some() {
        ("revoked", lang.tr("已撤销", "revoked").into())
    } else if g.expires_at <= now {
        ("expired", lang.tr("已过期", "expired").into())
    } else if g.approved_by.is_none() {
        (
            "waiting",
            lang.tr(
                "待第二人批准（在“待我处理”中）",
                "waiting for a second person (under “My tasks”)",
            )
            .into(),
        )
    } else {
        ("active", lang.tr("有效", "in force").into())
    }
}

async fn grants(app: &App, s: &Session, id: i64) -> Result<Vec<Value>, Error> {
    let tz = app.policies.change.timezone;
    let now = app.now();
    let mut out = Vec::new();
    for g in vault::grants(app, id).await? {
        let (state, text) = grant_state(s.lang, &g, now);
        out.push(json!({
            "id": g.id, "grantee": name_of(app, g.grantee_id).await,
            "granted_by": name_of(app, g.granted_by).await, "reason": g.reason,
            "expires_at": s.lang.moment(g.expires_at, tz), "state": state, "state_text": text,
            "approved_by": match g.approved_by { Some(a) => Some(name_of(app, a).await), None => None },
        }));
    }
    Ok(out)
}

async fn access_log(app: &App, s: &Session, id: i64) -> Result<Value, Error> {
    if !s.may(app, "audit.read") {
        return Ok(json!(null));
    }
    let tz = app.policies.change.timezone;
    let rows: Vec<Value> = vault::access_log(app, id)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq, "at": s.lang.moment_secs(r.at, tz), "actor": r.actor,
                "action": pick(s.lang, words::action(&r.action)),
                "allowed": r.outcome == crate::audit::Outcome::Ok.as_str(),
                "why": r.code.as_deref().map(|c| pick(s.lang, words::refusal(c))),
                "reason": r.reason,
            })
        })
        .collect();
    Ok(json!(rows))
}

async fn page(app: &App, s: &Session, id: i64, extra: Value, status: StatusCode) -> Response {
    if !s.may(app, "credential.read") {
        return not_permitted(app, s);
    }
    let built = async {
        let v = vault::get(app, id).await?;
        let reveal = reveal_state(app, s, &v).await?;
        let totp = if reveal.is_null() {
            false
        } else {
            vault::has_second_factor(app, s.who.user_id).await?
        };
        Ok::<_, Error>(json!({
            "c": credential_row(s, app, &v),
            "reveal": reveal,
            "totp_enrolled": totp,
            "can_rotate": vault::may_rotate(app, &s.who, &v.credential).await?,
            "can_grant": s.may(app, "credential.grant"),
            "grants": grants(app, s, id).await?,
            "access_log": access_log(app, s, id).await?,
            "show_secs": SHOW_SECS,
        }))
    }
    .await;
    match built {
        Ok(ctx) => {
            let title = format!(
                "{} · {}",
                s.lang.pick(TITLE),
                ctx["c"]["name"].as_str().unwrap_or("")
            );
            render(
                "credential.html",
                with(with(frame(app, s, &title), ctx), extra),
                status,
            )
        }
        // A secret already revealed (and audited) is shown even if the rest of the page
        // cannot be read: the reveal is not lost.
        Err(e) if extra.get("revealed").is_some() => {
            tracing::warn!(error = %e, credential = id, "credential page after a reveal");
            let c = json!({"c": {"id": id, "name": extra["revealed"]["account"].clone(),
                                 "rotation": {"due": false, "text": ""}},
                           "reveal": null, "grants": [], "access_log": null,
                           "show_secs": SHOW_SECS});
            render(
                "credential.html",
                with(with(frame(app, s, TITLE), c), extra),
                StatusCode::OK,
            )
        }
        Err(e) => error_page(app, Some(s), s.lang, e),
    }
}

/// A refused (or failed) action: audited as the API would, explained on the credential's page.
async fn answer(
    app: &App,
    s: &Session,
    id: i64,
    operation: &str,
    target: String,
    result: Result<(), Error>,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/console/vault/{id}")).into_response(),
        Err(e) => {
            let (status, text) = refused(app, s, operation, target, e).await;
            let flash = json!({"flash": text, "flash_kind": "error"});
            page(app, s, id, flash, status).await
        }
    }
}

#[derive(Deserialize)]
pub struct RevealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    totp: String,
}

/// `POST /console/vault/{id}/reveal`: the reveal, as `POST /api/v1/credentials/{id}/reveal`;
/// the answer shows the secret once.
pub async fn reveal(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<RevealForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let target = format!("POST /console/vault/{id}/reveal");
    let Some(who) = s.acting(&app, "credential.reveal") else {
        return answer(
            &app,
            &s,
            id,
            "credential.reveal",
            target,
            Err(Error::forbidden(Vec::new())),
        )
        .await;
    };
    let req = RevealRequest {
        reason: f.reason,
        change_id: None,
        totp: Some(f.totp.trim().to_string()).filter(|t| !t.is_empty()),
    };
    match vault::reveal(&app, &who, id, req).await {
        Ok(r) => {
            page(
                &app,
                &s,
                id,
                json!({"revealed": shown(&s, &r)}),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => answer(&app, &s, id, "credential.reveal", target, Err(e)).await,
    }
}

/// What the page shows of a reveal (the only place the secret is put into a page).
fn shown(s: &Session, r: &Revealed) -> Value {
    let under = match r.change_id {
        Some(c) => format!("{} #{c}", s.lang.tr("变更", "change")),
        None => s.lang.tr("长期授权", "standing grant").to_string(),
    };
    json!({
        "secret": r.secret.expose_secret(), "account": r.account, "version": r.version,
        "under": under, "rotate_after_use": r.rotate_after_use, "audit_seq": r.audit_seq,
    })
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    secret: String,
    /// `on` (a checkbox): changeguard makes and sets the new password itself.
    #[serde(default)]
    generate: String,
}

/// `POST /console/vault/{id}/rotate`, as `POST /api/v1/credentials/{id}/rotate`.
pub async fn rotate(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<RotateForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let generate = !f.generate.is_empty();
    let req = RotateCredential {
        secret: (!generate).then(|| SecretString::from(f.secret)),
        generate: generate.then_some(true),
    };
    // The API's route needs credential.read; the domain decides who may rotate.
    let result = match s.acting(&app, "credential.read") {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => vault::rotate(&app, &who, id, req).await.map(drop),
    };
    let target = format!("POST /console/vault/{id}/rotate");
    answer(&app, &s, id, "credential.rotate", target, result).await
}

#[derive(Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grantee: String,
    #[serde(default)]
    reason: String,
    /// `datetime-local`, in the bank's time zone.
    #[serde(default)]
    expires_at: String,
}

/// `POST /console/vault/{id}/grants`: gives a standing grant (a second person approves it), as
/// `POST /api/v1/credentials/{id}/grants`.
pub async fn create_grant(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<GrantForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = match (
        s.acting(&app, "credential.grant"),
        local_time(&app, "expires_at", &f.expires_at),
    ) {
        (None, _) => Err(Error::forbidden(Vec::new())),
        (Some(_), Err(e)) => Err(e),
        (Some(who), Ok(expires_at)) => {
            let req = CreateGrant {
                grantee: f.grantee.trim().to_string(),
                reason: f.reason,
                expires_at: expires_at.to_utc(),
            };
            vault::create_grant(&app, &who, id, req).await.map(drop)
        }
    };
    let target = format!("POST /console/vault/{id}/grants");
    answer(&app, &s, id, "credential.grant", target, result).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/vault/{id}/grants/{grant}/revoke`, as
/// `POST /api/v1/credential-grants/{grant}/revoke`.
pub async fn revoke_grant(
    State(app): State<App>,
    s: Session,
    Path((id, grant)): Path<(i64, i64)>,
    Form(f): Form<RevokeForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = match s.acting(&app, "credential.grant") {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => {
            let belongs = vault::grants(&app, id)
                .await
                .map(|gs| gs.iter().any(|g| g.id == grant));
            match belongs {
                Ok(true) => {
                    vault::revoke_grant(&app, &who, grant, RevokeGrant { reason: f.reason })
                        .await
                        .map(drop)
                }
                Ok(false) => Err(Error::Forbidden {
                    code: "grant_not_of_credential",
                    message: "该授权不属于此凭据 / This grant is not of this credential".into(),
                    policy_ids: Vec::new(),
                }),
                Err(e) => Err(e),
            }
        }
    };
    let target = format!("POST /console/vault/{id}/grants/{grant}/revoke");
    answer(&app, &s, id, "credential.grant_revoke", target, result).await
}
