//! 待我处理 / My tasks: what waits for the signed-in person (`inbox::of`), with the second-
//! person approvals (standing grants, disclosures, privileged roles) decided right there, by
//! the same domain functions as the API's `…/approve` and `…/refuse`.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{error_page, frame, refused, render, with};
use super::{Lang, Session};
use crate::App;
use crate::accounts::requests::{self as role_requests, RefuseRequest};
use crate::changes::{ChangeView, words};
use crate::error::Error;

const TITLE: &str = "待我处理 / My tasks";

fn change_row(app: &App, lang: Lang, c: &ChangeView) -> Value {
    let tz = app.policies.change.timezone;
    let (zh, en) = words::status(&c.status);
    json!({
        "id": c.id,
        "title": c.title,
        "status": lang.tr(zh, en),
        "status_code": c.status,
        "emergency": c.emergency,
        "requester": c.requester.display_name,
        "window": format!("{} – {}", lang.moment(c.planned_start, tz), lang.moment(c.planned_end, tz)),
    })
}

/// A user's name for a page, or their id when the account is gone.
/// A user as people read them: "display name（username）".
pub(super) async fn name_of(app: &App, id: i64) -> String {
    match crate::db::users::get(&app.db, id).await {
        Ok(u) => format!("{}（{}）", u.display_name, u.username),
        Err(_) => format!("#{id}"),
    }
}

async fn page(app: &App, s: &Session, flash: Option<(StatusCode, String, &str)>) -> Response {
    let lang = s.lang;
    // The inbox the session read for this page; read here after a decision (a POST).
    let fresh;
    let inbox = match &s.inbox {
        Some(i) => i,
        None => match crate::inbox::of(app, &s.who, app.now()).await {
            Ok(i) => {
                fresh = i;
                &fresh
            }
            Err(e) => return error_page(app, Some(s), lang, e),
        },
    };
    let tz = app.policies.change.timezone;
    let rows = |cs: &[ChangeView]| {
        cs.iter()
            .map(|c| change_row(app, lang, c))
            .collect::<Vec<_>>()
    };
    let mut grants = Vec::new();
    for g in &inbox.grants {
        let credential = match crate::db::vault::get_credential(&app.db, g.credential_id).await {
            Ok(c) => c.name,
            Err(_) => format!("#{}", g.credential_id),
        };
        grants.push(json!({
            "id": g.id, "credential": credential, "reason": g.reason,
            "grantee": name_of(app, g.grantee_id).await,
            "granted_by": name_of(app, g.granted_by).await,
            "expires_at": lang.moment(g.expires_at, tz),
        }));
    }
    let mut disclosures = Vec::new();
    for d in &inbox.disclosures {
        let asset = match crate::db::assets::get_asset(&app.db, d.asset_id).await {
            Ok(a) => a.name,
            Err(_) => format!("#{}", d.asset_id),
        };
        disclosures.push(json!({
            "id": d.id, "asset": asset, "recipient": d.recipient, "purpose": d.purpose,
            "requested_by": name_of(app, d.requested_by).await,
            "requested_at": lang.moment(d.requested_at, tz),
            "half_approved": d.manager_approved_by.is_some() || d.compliance_approved_by.is_some(),
        }));
    }
    let roles: Vec<Value> = inbox
        .role_requests
        .iter()
        .map(|r| {
            let role = app.policies.roles.get(&r.role).map_or(r.role.clone(), |x| {
                lang.tr(&x.title_zh, &x.title_en).to_string()
            });
            json!({
                "id": r.id, "username": r.username, "role": role,
                "requested_by": r.requested_by_username,
                "expires_at": r.expires_at.map(|t| lang.moment(t, tz)),
                "lapses_at": lang.moment(r.lapses_at, tz),
            })
        })
        .collect();
    let rotations: Vec<Value> = inbox
        .rotations
        .iter()
        .map(|c| json!({"id": c.credential.id, "name": c.credential.name}))
        .collect();
    let (status, text, kind) = match flash {
        Some((status, text, kind)) => (status, Some(text), kind),
        None => (StatusCode::OK, None, ""),
    };
    let ctx = with(
        frame(app, s, TITLE),
        json!({
            "count": inbox.count(),
            "approvals": rows(&inbox.approvals),
            "to_start": rows(&inbox.to_start),
            "reviews": rows(&inbox.reviews),
            "rotations": rotations,
            "grants": grants,
            "disclosures": disclosures,
            "role_requests": roles,
            "flash": text,
            "flash_kind": kind,
        }),
    );
    render("inbox.html", ctx, status)
}

/// `GET /console/start`, where a sign-in lands: the inbox when something waits, else the
/// calendar.
pub async fn start(s: Session) -> Response {
    let to = if s.tasks().unwrap_or(0) > 0 {
        "/console/inbox"
    } else {
        "/console"
    };
    Redirect::to(to).into_response()
}

/// `GET /console/inbox`.
pub async fn show(State(app): State<App>, s: Session) -> Response {
    page(&app, &s, None).await
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    /// `approve` or `refuse`.
    #[serde(default)]
    verdict: String,
    /// Why, for a refusal.
    #[serde(default)]
    reason: String,
}

/// `POST /console/inbox/{kind}/{id}`: approve (or refuse) a standing grant (`grant`), a
/// disclosure (`disclosure`) or a privileged role (`role`), as the API's routes do.
pub async fn decide(
    State(app): State<App>,
    s: Session,
    Path((kind, id)): Path<(String, i64)>,
    Form(f): Form<DecisionForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "refuse" => false,
        _ => return error_page(&app, Some(&s), s.lang, Error::NotFound { what: "verdict" }),
    };
    let (operation, permission) = match (kind.as_str(), approve) {
        ("grant", true) => ("credential.grant_approve", "credential.grant_approve"),
        ("disclosure", true) => ("disclosure.approve", "disclosure.approve"),
        ("disclosure", false) => ("disclosure.refuse", "disclosure.approve"),
        ("role", true) => ("role_request.approve", "role.grant"),
        ("role", false) => ("role_request.refuse", "role.grant"),
        _ => return error_page(&app, Some(&s), s.lang, Error::NotFound { what: "task" }),
    };
    let result = match s.acting(&app, permission) {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => match (kind.as_str(), approve) {
            ("grant", _) => crate::vault::approve_grant(&app, &who, id).await.map(drop),
            ("disclosure", true) => crate::assets::approve(&app, &who, id).await.map(drop),
            ("disclosure", false) => crate::assets::refuse(&app, &who, id, &f.reason)
                .await
                .map(drop),
            ("role", true) => role_requests::approve(&app, &who, id).await.map(drop),
            _ => role_requests::refuse(&app, &who, id, RefuseRequest { reason: f.reason })
                .await
                .map(drop),
        },
    };
    match result {
        Ok(()) => Redirect::to("/console/inbox").into_response(),
        Err(e) => {
            let target = format!("POST /console/inbox/{kind}/{id}");
            let (status, text) = refused(&app, &s, operation, target, e).await;
            page(&app, &s, Some((status, text, "error"))).await
        }
    }
}
