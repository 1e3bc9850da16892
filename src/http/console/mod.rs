//! 控制台 / The web console: server-rendered pages over the same domain functions and the same
//! Cedar permissions as the API, so a page never offers what the server would refuse and the
//! server refuses it anyway.
//!
//! Session: the access token of an ordinary login, in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` when the public URL is https). CSRF: every form echoes a random per-browser token
//! that also sits in its own cookie (double submit), and a cross-origin `Origin` is refused.
//! Refused console actions are audited exactly like refused API writes.

mod pages;
mod templates;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::App;
use crate::error::Error;
use crate::rbac::{Facts, Principal, Resource};

pub use templates::Templates;

pub(crate) const SESSION_COOKIE: &str = "cg_session";
pub(crate) const CSRF_COOKIE: &str = "cg_csrf";

pub fn router(app: App) -> Router {
    Router::new()
        .route("/console", get(pages::calendar))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route(
            "/console/changes/new",
            get(pages::new_change).post(pages::file_change),
        )
        .route("/console/changes/{id}", get(pages::change))
        .route("/console/changes/{id}/{step}", post(pages::change_step))
        .route("/console/audit", get(pages::audit))
        .route("/console/static/{file}", get(pages::asset))
        .layer(middleware::from_fn(same_origin))
        // Browsers send `Origin: null` on forms under `no-referrer`; the console needs its origin.
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(app)
}

/// Refuses state-changing requests from another origin (belt and braces with SameSite=Strict).
async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::GET {
        let host = req.headers().get(header::HOST).cloned();
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://").map(|(_, rest)| rest.to_string()))
                .zip(host.as_ref().and_then(|h| h.to_str().ok()))
                .is_some_and(|(o, h)| o == h);
            if !same {
                return refusal_page("跨站请求被拒绝 / Cross-origin request refused");
            }
        }
    }
    next.run(req).await
}

/// A signed-in console user and the CSRF token of this browser.
pub struct Session {
    pub who: Principal,
    pub csrf: String,
}

impl Session {
    pub fn may(&self, app: &App, permission: &str) -> bool {
        app.policies
            .authorizer
            .decide(&self.who, permission, &Resource::Api, &Facts::default())
            .allowed
    }

    /// The form's token must equal this browser's cookie.
    pub fn csrf_ok(&self, sent: &str) -> bool {
        !sent.is_empty() && constant_time_eq(sent.as_bytes(), self.csrf.as_bytes())
    }
}

pub(crate) fn csrf_refused() -> Response {
    refusal_page("表单已过期，请刷新后重试 / The form has expired; reload and try again")
}

fn refusal_page(text: &str) -> Response {
    let body = Templates::get()
        .and_then(|t| {
            t.render(
                "error.html",
                serde_json::json!({"title": "请求被拒绝 / Request refused", "message": text}),
            )
        })
        .unwrap_or_else(|_| text.to_string());
    (StatusCode::FORBIDDEN, html(body)).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<App> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = jar.get(SESSION_COOKIE).map(|c| c.value().to_string());
        let csrf = jar.get(CSRF_COOKIE).map(|c| c.value().to_string());
        match (token, csrf) {
            (Some(token), Some(csrf)) => {
                match crate::auth::authenticate(app, Some(&token), app.now()).await {
                    Ok(who) => Ok(Session { who, csrf }),
                    Err(Error::Unauthenticated { .. }) => Err(to_login()),
                    Err(e) => Err(pages::error_page(app, None, e)),
                }
            }
            _ => Err(to_login()),
        }
    }
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// A browser-session cookie: HttpOnly, SameSite=Strict, path /console, Secure on https.
pub(crate) fn cookie(app: &App, name: &'static str, value: String) -> Cookie<'static> {
    let secure = app
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/console")
        .build()
}

pub(crate) fn html(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
