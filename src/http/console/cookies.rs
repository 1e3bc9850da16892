//! The console's cookies: the session, the CSRF token, the device and the language.
//!
//! All are `HttpOnly` (but the language), `SameSite=Strict`. On https (the public URL says so)
//! they are `Secure` and carry the `__Host-` prefix, with path `/`: the browser then takes them
//! only from this very host, so a sibling host of the bank's domain can neither plant nor read
//! one. Over plain http (a trial on the loopback) they are named without the prefix, for path
//! `/console`.
//!
//! The CSRF token of a signed-in browser is bound to its session: a MAC of the session id under
//! the server's key, so a token planted by somebody else, or taken from another session, is
//! refused. Before the login a random token in its own cookie (double submit) guards the login
//! form.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use cookie::time::Duration;

use crate::App;

/// A console cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The access token of the console session.
    Session,
    /// The CSRF token (random before the login, bound to the session after it).
    Csrf,
    /// The device that signed in successfully before ([`crate::auth::device`]).
    Device,
    /// The chosen language (not a secret; a year).
    Lang,
}

fn on_https(app: &App) -> bool {
    app.settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

/// The cookie's name on this server.
pub(crate) fn name(app: &App, kind: Kind) -> &'static str {
    match (kind, on_https(app)) {
        (Kind::Session, false) => "cg_session",
        (Kind::Session, true) => "__Host-cg_session",
        (Kind::Csrf, false) => "cg_csrf",
        (Kind::Csrf, true) => "__Host-cg_csrf",
        (Kind::Device, false) => "cg_device",
        (Kind::Device, true) => "__Host-cg_device",
        (Kind::Lang, _) => super::i18n::LANG_COOKIE,
    }
}

/// The cookie's value in this request, if any.
pub(crate) fn get(app: &App, jar: &CookieJar, kind: Kind) -> Option<String> {
    jar.get(name(app, kind)).map(|c| c.value().to_string())
}

/// A cookie of `kind` holding `value`. The session and CSRF cookies end with the browser; the
/// device cookie lives [`crate::auth::device::LIFETIME_DAYS`], the language a year.
pub(crate) fn make(app: &App, kind: Kind, value: String) -> Cookie<'static> {
    let https = on_https(app);
    let mut c = Cookie::build((name(app, kind), value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(https)
        .path(if https { "/" } else { "/console" });
    match kind {
        Kind::Device => c = c.max_age(Duration::days(crate::auth::device::LIFETIME_DAYS)),
        Kind::Lang => c = c.max_age(Duration::days(365)),
        Kind::Session | Kind::Csrf => {}
    }
    c.build()
}

/// The CSRF token of a signed-in browser: bound to its session.
pub(crate) fn csrf_of_session(app: &App, session_id: &str) -> String {
    app.sealer
        .keyed_digest("console csrf", session_id.as_bytes())
}
