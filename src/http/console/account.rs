//! 我的账户 / The signed-in person's account: changing the password (the only page a temporary
//! password opens) and the list of their sessions, each of which they may end. The same domain
//! functions as `POST /api/v1/me/password` and `/api/v1/me/sessions`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Session;
use super::pages::{error_page, frame, refused, render, with};
use crate::App;
use crate::accounts::self_service::{self, ChangePassword};
use crate::db::users::SessionScope;

const TITLE: &str = "我的账户 / My account";

async fn page(app: &App, s: &Session, extra: Value, status: StatusCode) -> Response {
    let sessions = match self_service::sessions(app, &s.who, s.who.user_id).await {
        Ok(v) => v,
        Err(e) => return error_page(app, Some(s), s.lang, e),
    };
    let tz = app.policies.change.timezone;
    let rows: Vec<Value> = sessions
        .iter()
        .map(|v| {
            json!({"id": v.session.id, "current": v.current,
                   "address": v.session.address,
                   "created_at": v.session.created_at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
                   "expires_at": v.session.expires_at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()})
        })
        .collect();
    let ctx = with(
        with(
            frame(app, s, TITLE),
            json!({"sessions": rows,
                   "must_change": s.who.scope == SessionScope::PasswordChange}),
        ),
        extra,
    );
    render("account.html", ctx, status)
}

/// `GET /console/me/account`.
pub async fn show(State(app): State<App>, s: Session) -> Response {
    page(&app, &s, json!({}), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

/// `POST /console/me/password`: the new password; the person's other sessions end.
pub async fn change_password(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    s: Session,
    Form(f): Form<PasswordForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let trusted = app.settings.trusted_proxy_nets().unwrap_or_default();
    let client = crate::http::client::client_ip(&trusted, peer.ip(), &headers);
    let req = ChangePassword {
        current_password: SecretString::from(f.current_password),
        new_password: SecretString::from(f.new_password),
    };
    match self_service::change_password(&app, &s.who, req, Some(client)).await {
        Ok(scope) => {
            let mut s = s;
            s.who.scope = scope;
            let text = s.lang.tr(
                "密码已修改，其他会话已结束。",
                "Your password is changed; your other sessions have ended.",
            );
            page(
                &app,
                &s,
                json!({"flash": text, "flash_kind": "ok"}),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => failed(&app, &s, "me.password", "POST /console/me/password", e).await,
    }
}

#[derive(Deserialize)]
pub struct EndForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    session: String,
}

/// `POST /console/me/sessions/end`: ends one of the person's sessions.
pub async fn end_session(State(app): State<App>, s: Session, Form(f): Form<EndForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    match self_service::end_session(&app, &s.who, s.who.user_id, &f.session).await {
        Ok(()) => Redirect::to("/console/me/account").into_response(),
        Err(e) => {
            failed(
                &app,
                &s,
                "me.session_end",
                "POST /console/me/sessions/end",
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
