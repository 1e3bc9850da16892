//! 控制台 / The web console: server-rendered pages over the same domain functions and the same
//! Cedar permissions as the API, so a page never offers what the server would refuse and the
//! server refuses it anyway.
//!
//! Session: the access token of an ordinary login, in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` and `__Host-` when the public URL is https; [`cookies`]). CSRF: every form echoes
//! the token of its session (a MAC of the session id), and every form post must name this
//! origin (`Origin`, else `Referer`).
//! Refused console actions are audited exactly like refused API writes.

mod account;
mod admin;
mod assets;
mod change_list;
mod charts;
pub(crate) mod cookies;
mod filing;
mod i18n;
mod inbox;
mod me;
mod pages;
mod reports;
mod table;
mod templates;
mod vault;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::App;
use crate::db::users::SessionScope;
use crate::error::Error;
use crate::rbac::{Facts, Principal, Resource};
use cookies::Kind;

pub use i18n::Lang;
pub use templates::Templates;

/// A console token older than this is renewed on the next request (while its session lives).
const RENEW_AFTER_SECS: i64 = 5 * 60;
/// No console session lives longer than this from its login, however active (a working day).
pub(crate) const CONSOLE_SESSION_MAX_SECS: i64 = 10 * 60 * 60;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/console", get(pages::calendar))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/start", get(inbox::start))
        .route("/console/inbox", get(inbox::show))
        .route("/console/inbox/{kind}/{id}", post(inbox::decide))
        .route("/console/assets", get(assets::show).post(assets::create))
        .route("/console/assets/{id}/disclosures", post(assets::request))
        .route("/console/vault", get(vault::list))
        .route("/console/vault/{id}", get(vault::show))
        .route("/console/vault/{id}/reveal", post(vault::reveal))
        .route("/console/vault/{id}/rotate", post(vault::rotate))
        .route("/console/vault/{id}/grants", post(vault::create_grant))
        .route(
            "/console/vault/{id}/grants/{grant}/revoke",
            post(vault::revoke_grant),
        )
        .route("/console/reports", get(reports::show))
        .route("/console/reports.csv", get(reports::csv))
        .route("/console/reports/schedule", get(reports::schedule))
        .route("/console/changes", get(change_list::list))
        .route("/console/changes.csv", get(change_list::csv))
        .route("/console/changes.xlsx", get(change_list::xlsx))
        .route(
            "/console/changes/new",
            get(filing::new_change).post(filing::file_change),
        )
        .route(
            "/console/changes/standard/{key}",
            post(filing::file_standard),
        )
        .route("/console/changes/{id}", get(pages::change))
        .route("/console/changes/{id}/{step}", post(pages::change_step))
        .route("/console/audit", get(pages::audit))
        .route(
            "/console/admin/users",
            get(admin::users).post(admin::create_user),
        )
        .route("/console/admin/users/{id}", get(admin::user))
        .route("/console/admin/users/{id}/active", post(admin::set_active))
        .route("/console/admin/users/{id}/roles", post(admin::grant))
        .route(
            "/console/admin/users/{id}/roles/{role}/revoke",
            post(admin::revoke),
        )
        .route(
            "/console/admin/systems",
            get(admin::systems).post(admin::create_system),
        )
        .route("/console/admin/systems/{key}", post(admin::update_system))
        .route(
            "/console/admin/calendar",
            get(admin::years).post(admin::load_year),
        )
        .route("/console/admin/notifications", get(admin::notifications))
        .route(
            "/console/admin/notifications/{id}/retry",
            post(admin::retry),
        )
        .route("/console/calendar-feed", post(pages::feed_create))
        .route("/console/calendar-feed/revoke", post(pages::feed_revoke))
        .route("/console/me/totp", get(me::show).post(me::enrol))
        .route("/console/me/account", get(account::show))
        .route("/console/me/password", post(account::change_password))
        .route("/console/me/sessions/end", post(account::end_session))
        .route("/console/me/totp/confirm", post(me::confirm))
        .route("/console/lang/{lang}", get(pages::switch_lang))
        .route("/console/static/{file}", get(pages::asset))
        .layer(middleware::from_fn_with_state(app.clone(), renew))
        .layer(middleware::from_fn(same_origin))
        // Browsers send `Origin: null` on forms under `no-referrer`; the console needs its origin.
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(app)
}

/// Refuses state-changing requests that do not name this origin (belt and braces with
/// SameSite=Strict and the CSRF token): `Origin` must be this host, or, when a browser sends
/// none, `Referer` must be a page of this host. A post naming neither is refused too.
async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let headers = req.headers();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let named = match headers.get(header::ORIGIN) {
            Some(origin) => origin.to_str().ok().and_then(authority),
            None => headers
                .get(header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(authority),
        };
        if host.is_none() || named != host {
            let lang = lang_of(headers);
            return refusal_page(lang, "跨站请求被拒绝 / Cross-origin request refused");
        }
    }
    next.run(req).await
}

/// `host[:port]` of an http(s) URL or origin.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Sliding renewal of the console session: a token older than [`RENEW_AFTER_SECS`] whose
/// session is still alive (not logged out, user active, password unchanged, not expired, opened
/// less than [`CONSOLE_SESSION_MAX_SECS`] ago) is replaced by a fresh one for the same session,
/// which lives another token lifetime. A session that is over is never renewed, so logout,
/// disabling the user and a password change still end it on the next request.
async fn renew(
    axum::extract::State(app): axum::extract::State<App>,
    mut req: Request,
    next: Next,
) -> Response {
    let jar = CookieJar::from_headers(req.headers());
    let fresh = match cookies::get(&app, &jar, Kind::Session) {
        Some(c) => renewed_token(&app, &c).await,
        None => None,
    };
    if let Some(token) = &fresh {
        // The handler sees the renewed token.
        let jar = jar.add(Cookie::new(
            cookies::name(&app, Kind::Session),
            token.clone(),
        ));
        let header: Vec<String> = jar
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&header.join("; ")) {
            req.headers_mut().remove(header::COOKIE);
            req.headers_mut().insert(header::COOKIE, v);
        }
    }
    let mut resp = next.run(req).await;
    if let Some(token) = fresh {
        // Logout (or a new login) already decided what the cookie becomes.
        let decided = resp.headers().get_all(header::SET_COOKIE).iter().any(|v| {
            v.as_bytes()
                .starts_with(cookies::name(&app, Kind::Session).as_bytes())
        });
        if !decided
            && let Ok(v) =
                HeaderValue::from_str(&cookies::make(&app, Kind::Session, token).to_string())
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn renewed_token(app: &App, token: &str) -> Option<String> {
    let now = app.now();
    let claims = app.tokens.verify(token, now)?;
    if now.timestamp() - claims.iat < RENEW_AFTER_SECS {
        return None;
    }
    let user_id: i64 = claims.sub.parse().ok()?;
    let expires_at = now + chrono::TimeDelta::seconds(app.settings.token_ttl_secs as i64);
    let opened_after = expires_at - chrono::TimeDelta::seconds(CONSOLE_SESSION_MAX_SECS);
    match crate::db::users::extend_session(
        &app.db,
        &claims.jti,
        user_id,
        now,
        expires_at,
        opened_after,
    )
    .await
    {
        Ok(true) => app
            .tokens
            .issue(user_id, &claims.jti, now, expires_at)
            .map_err(|e| tracing::error!(error = %e, "console token renewal failed"))
            .ok(),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "console session renewal failed");
            None
        }
    }
}

/// The language this browser chose (`cg_lang`), Chinese by default.
pub(crate) fn lang_of(headers: &axum::http::HeaderMap) -> Lang {
    let jar = CookieJar::from_headers(headers);
    Lang::from_cookie(jar.get(i18n::LANG_COOKIE).map(|c| c.value()))
}

/// A signed-in console user, the CSRF token of their session and their language.
pub struct Session {
    pub who: Principal,
    pub csrf: String,
    pub lang: Lang,
    /// What waits for this person (`inbox::of`), read for pages only (GET, not downloads).
    pub inbox: Option<crate::inbox::Inbox>,
}

impl Session {
    /// How many tasks wait for this person, when read.
    pub fn tasks(&self) -> Option<usize> {
        self.inbox.as_ref().map(crate::inbox::Inbox::count)
    }

    pub fn may(&self, app: &App, permission: &str) -> bool {
        app.policies
            .authorizer
            .decide(&self.who, permission, &Resource::Api, &Facts::default())
            .allowed
    }

    /// The signed-in user acting under `permission`, with the policies that permit it (for the
    /// audit entry, as the API's gate records them); `None` without the permission.
    pub fn acting(&self, app: &App, permission: &str) -> Option<Principal> {
        let d = app.policies.authorizer.decide(
            &self.who,
            permission,
            &Resource::Api,
            &Facts::default(),
        );
        d.allowed.then(|| Principal {
            permitted_by: d.policy_ids,
            ..self.who.clone()
        })
    }

    /// The form's token must be this session's.
    pub fn csrf_ok(&self, sent: &str) -> bool {
        !sent.is_empty() && constant_time_eq(sent.as_bytes(), self.csrf.as_bytes())
    }
}

pub(crate) fn csrf_refused(lang: Lang) -> Response {
    refusal_page(
        lang,
        "表单已过期，请刷新后重试 / The form has expired; reload and try again",
    )
}

fn refusal_page(lang: Lang, text: &str) -> Response {
    let text = lang.pick(text);
    let body = Templates::get()
        .and_then(|t| {
            t.render(
                "error.html",
                serde_json::json!({"title": lang.tr("请求被拒绝", "Request refused"),
                                   "message": text, "lang": lang}),
            )
        })
        .unwrap_or_else(|_| text.to_string());
    (StatusCode::FORBIDDEN, html(body)).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

impl FromRequestParts<App> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = cookies::get(app, &jar, Kind::Session);
        let lang = lang_of(&parts.headers);
        match token {
            Some(token) => {
                match crate::auth::authenticate(app, Some(&token), app.now()).await {
                    // A temporary password's session sees its account page, nothing else.
                    Ok(who)
                        if who.scope == SessionScope::PasswordChange
                            && !matches!(
                                parts.uri.path(),
                                "/console/me/account" | "/console/me/password" | "/console/logout"
                            ) =>
                    {
                        Err(Redirect::to("/console/me/account").into_response())
                    }
                    // One opened to enrol a second factor sees the enrolment page (and may
                    // change its password), nothing else.
                    Ok(who)
                        if who.scope == SessionScope::Enrolment
                            && !matches!(
                                parts.uri.path(),
                                "/console/me/totp"
                                    | "/console/me/totp/confirm"
                                    | "/console/me/account"
                                    | "/console/me/password"
                                    | "/console/logout"
                            ) =>
                    {
                        Err(Redirect::to("/console/me/totp").into_response())
                    }
                    Ok(who) => {
                        let page = parts.method == axum::http::Method::GET
                            && !parts.uri.path().ends_with(".csv")
                            && !parts.uri.path().ends_with(".xlsx");
                        let inbox = if page {
                            match crate::inbox::of(app, &who, app.now()).await {
                                Ok(inbox) => Some(inbox),
                                Err(e) => {
                                    tracing::warn!(error = %e, "console task count failed");
                                    None
                                }
                            }
                        } else {
                            None
                        };
                        Ok(Session {
                            csrf: cookies::csrf_of_session(app, &who.session_id),
                            who,
                            lang,
                            inbox,
                        })
                    }
                    Err(Error::Unauthenticated { .. }) => Err(to_login()),
                    Err(e) => Err(pages::error_page(app, None, lang, e)),
                }
            }
            None => Err(to_login()),
        }
    }
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

pub(crate) fn html(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
