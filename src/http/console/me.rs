//! The signed-in user's own second factor: TOTP enrolment with the QR code drawn by the
//! server, then confirmation with a code — the same domain functions as `POST /api/v1/me/totp`
//! and `/confirm`. Every account may enrol; refusals are audited like the API's.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Session;
use super::pages::{error_page, frame, refused, render, with};
use crate::App;
use crate::vault;

const TITLE: &str = "我的二次验证 / My second factor";

async fn page(app: &App, s: &Session, extra: Value, status: StatusCode) -> Response {
    let enrolled = match crate::db::vault::has_confirmed_totp(&app.db, s.who.user_id).await {
        Ok(e) => e,
        Err(e) => return error_page(app, Some(s), s.lang, e.into()),
    };
    let ctx = with(
        with(frame(app, s, TITLE), json!({"enrolled": enrolled})),
        extra,
    );
    render("totp.html", ctx, status)
}

/// `GET /console/me/totp`: whether a second factor is set up, and a button to (re-)enrol.
pub async fn show(State(app): State<App>, s: Session) -> Response {
    page(&app, &s, json!({}), StatusCode::OK).await
}

/// `POST /console/me/totp`: a new secret, shown once as a QR code and as text. Replacing a
/// confirmed factor needs its current code (or a recovery code).
pub async fn enrol(State(app): State<App>, s: Session, Form(f): Form<CodeForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let current = Some(f.code.trim()).filter(|c| !c.is_empty());
    match vault::enrol_totp(&app, &s.who, current).await {
        Ok(e) => {
            let extra = json!({"enrolment": {
                "secret": e.secret, "otpauth_uri": e.otpauth_uri, "qr_svg": e.qr_svg}});
            page(&app, &s, extra, StatusCode::OK).await
        }
        Err(e) => failed(&app, &s, "me.totp_enrol", "POST /console/me/totp", e).await,
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// `POST /console/me/totp/confirm`: the first code from the app confirms the enrolment.
pub async fn confirm(State(app): State<App>, s: Session, Form(f): Form<CodeForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    match vault::confirm_totp(&app, &s.who, f.code.trim()).await {
        Ok(()) => {
            // An enrolment-only session is lifted by the confirmation.
            let mut s = s;
            s.who.scope = crate::db::users::SessionScope::Full;
            page(&app, &s, json!({"confirmed": true}), StatusCode::OK).await
        }
        Err(e) => {
            failed(
                &app,
                &s,
                "me.totp_confirm",
                "POST /console/me/totp/confirm",
                e,
            )
            .await
        }
    }
}

async fn failed(
    app: &App,
    s: &Session,
    operation: &str,
    target: &str,
    e: crate::error::Error,
) -> Response {
    let (status, text) = refused(app, s, operation, target.to_string(), e).await;
    page(
        app,
        s,
        json!({"flash": text, "flash_kind": "error"}),
        status,
    )
    .await
}
