//! The gate in front of every API route.
//!
//! Each route declares its access in ONE place, its `#[utoipa::path(security(...))]`:
//! `security(())` public, `security(("bearer" = []))` any signed-in user,
//! `security(("bearer" = ["user.manage"]))` that permission. The table below is read from the
//! generated OpenAPI document, so the docs and the enforcement cannot disagree. A route without
//! a declaration is refused to everybody (deny by default).
//!
//! The gate also audits every refused write of a known person (any 4xx answer to a non-GET
//! request but 404), in one place.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::problem::{ApiError, Audited, Refusal, problem};
use crate::App;
use crate::audit::refusal_budget::{self, Verdict};
use crate::audit::{Entry, Outcome};
use crate::db::users::SessionScope;
use crate::error::Error;
use crate::rbac::{Facts, Principal, Resource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    Authenticated,
    Permission(String),
}

#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub access: Access,
    /// The operation id, used as the audit action of refusals.
    pub operation: String,
}

/// (method, path template) -> access, from the OpenAPI document.
#[derive(Debug, Clone, Default)]
pub struct RouteTable(pub HashMap<(Method, String), RouteInfo>);

impl RouteTable {
    pub fn from_openapi(doc: &Value) -> Result<RouteTable, String> {
        let mut table = HashMap::new();
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("OpenAPI document has no paths")?;
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                let Ok(m) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let operation = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .unwrap_or(path)
                    .to_string();
                let security = op
                    .get("security")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        format!("{method} {path} declares no security: refused to everybody")
                    })?;
                let access = access_of(security)
                    .ok_or_else(|| format!("{method} {path}: unsupported security declaration"))?;
                table.insert((m, path.clone()), RouteInfo { access, operation });
            }
        }
        Ok(RouteTable(table))
    }

    /// The declaration of a route; HEAD is answered like GET.
    pub fn get(&self, method: &Method, path: &str) -> Option<&RouteInfo> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0.get(&(method.clone(), path.to_string()))
    }

    /// The methods declared for a path, sorted.
    pub fn methods(&self, path: &str) -> Vec<String> {
        let mut m: Vec<String> = self
            .0
            .keys()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.to_string())
            .collect();
        m.sort();
        m
    }
}

fn access_of(security: &[Value]) -> Option<Access> {
    match security {
        [] => None,
        [one] => {
            let obj = one.as_object()?;
            if obj.is_empty() {
                return Some(Access::Public);
            }
            let scopes = obj.get("bearer")?.as_array()?;
            match scopes.as_slice() {
                [] => Some(Access::Authenticated),
                [p] => Some(Access::Permission(p.as_str()?.to_string())),
                _ => None,
            }
        }
        _ => None,
    }
}

#[derive(Clone)]
pub struct Gate {
    pub app: App,
    pub table: Arc<RouteTable>,
}

fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    let value = parts.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The middleware.
pub async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let Some(info) = matched.as_deref().and_then(|p| gate.table.get(&method, p)) else {
        // Every handler is declared (the table is built from the same OpenAPI document and
        // start-up fails on an undeclared one), so an unknown method on a known path is a 405.
        let allow = matched
            .as_deref()
            .map(|p| gate.table.methods(p))
            .unwrap_or_default();
        let mut resp = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "不支持该请求方法 / Method not allowed",
            Default::default(),
        );
        if let Ok(v) = header::HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    };
    let app = &gate.app;
    let now = app.now();
    let write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // What the audit entry of a refused write needs; a read needs none of it.
    let request_id = write
        .then(|| req.headers().get("x-request-id")?.to_str().ok())
        .flatten()
        .map(str::to_string);
    let path = if write {
        req.uri().path().to_string()
    } else {
        String::new()
    };
    let token = bearer(req.headers());

    // Who is calling (kept for the audit entry even when refused), then may they.
    let admitted: Result<Option<Principal>, (Option<Principal>, Error)> = match &info.access {
        Access::Public => Ok(None),
        Access::Authenticated => match crate::auth::authenticate(app, token, now).await {
            Err(e) => Err((None, e)),
            // A machine's token does what its roles permit; of the routes open to anybody
            // signed in it may only read who it is (no logout, second factor or feed).
            Ok(who) if who.token.is_some() && info.operation != "me.get" => Err((
                Some(who),
                Error::Forbidden {
                    code: "not_for_service_accounts",
                    message: "服务账号不能使用此功能 / A service account cannot use this".into(),
                    policy_ids: Vec::new(),
                },
            )),
            Ok(who) if !within_scope(&who, &info.operation) => Err(out_of_scope(who)),
            Ok(who) => Ok(Some(who)),
        },
        Access::Permission(p) => match crate::auth::authenticate(app, token, now).await {
            Err(e) => Err((None, e)),
            Ok(who) if !within_scope(&who, &info.operation) => Err(out_of_scope(who)),
            Ok(mut who) => {
                let d = app
                    .policies
                    .authorizer
                    .decide(&who, p, &Resource::Api, &Facts::default());
                if d.allowed {
                    who.permitted_by = d.policy_ids;
                    Ok(Some(who))
                } else {
                    Err((Some(who), Error::forbidden(d.policy_ids)))
                }
            }
        },
    };
    let (principal, response) = match admitted {
        Ok(principal) => {
            // A read's principal goes to the handler; a write's is kept for the audit too.
            let kept = match principal {
                Some(p) if write => {
                    req.extensions_mut().insert(p.clone());
                    Some(p)
                }
                Some(p) => {
                    req.extensions_mut().insert(p);
                    None
                }
                None => None,
            };
            let resp = next.run(req).await;
            (kept, resp)
        }
        Err((who, e)) => (who, ApiError::from(e).into_response()),
    };

    if write {
        let permission = match &info.access {
            Access::Permission(p) => Some(p.clone()),
            _ => None,
        };
        let refused = Refused {
            principal: principal.as_ref(),
            operation: &info.operation,
            target: format!("{method} {path}"),
            permission,
            request_id,
        };
        if let Err(failed) = audit_refusal(app, refused, &response, now).await {
            return failed;
        }
        if info.operation == "auth.login" && is_failed_login(response.status()) {
            pad_failed_login(started).await;
        }
    }
    response
}

/// No failed or delayed login (401, 429, 503) is answered sooner than this after it arrived: well
/// above the argon2 work and the audit write, so an existing username (whose failure is
/// audited) and an unknown one (whose failure is not), checked or throttled, cost the same time
/// to the one who asks.
pub(crate) const FAILED_LOGIN_FLOOR: std::time::Duration = std::time::Duration::from_millis(400);

/// The answers to a login that are held to [`FAILED_LOGIN_FLOOR`]: refused (401), delayed
/// (429), or the directory not answering (503, which must not be quicker than a refusal).
pub(crate) fn is_failed_login(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// Waits until [`FAILED_LOGIN_FLOOR`] has passed since `started` (the answer's shape in time,
/// not the domain's clock).
pub(crate) async fn pad_failed_login(started: tokio::time::Instant) {
    tokio::time::sleep_until(started + FAILED_LOGIN_FLOOR).await;
}

/// Whether the caller's session may use `operation`: a session opened with a temporary password
/// reads who it is, changes the password and logs out; one opened to enrol a second factor
/// does that (and may change the password), nothing else.
fn within_scope(who: &Principal, operation: &str) -> bool {
    match who.scope {
        SessionScope::Full => true,
        SessionScope::PasswordChange => {
            matches!(operation, "me.get" | "me.password" | "auth.logout")
        }
        SessionScope::Enrolment => matches!(
            operation,
            "me.get" | "me.password" | "auth.logout" | "me.totp_enrol" | "me.totp_confirm"
        ),
    }
}

/// The refusal of a request outside the caller's session scope.
fn out_of_scope(who: Principal) -> (Option<Principal>, Error) {
    let (code, message) = match who.scope {
        SessionScope::Enrolment => (
            "enrolment_required",
            "请先登记并确认动态口令（第二因素） / Enrol and confirm your second factor (TOTP) first",
        ),
        _ => (
            "password_change_required",
            "请先修改临时密码 / Change your temporary password first",
        ),
    };
    (
        Some(who),
        Error::Forbidden {
            code,
            message: message.into(),
            policy_ids: Vec::new(),
        },
    )
}

/// A refused write, as the audit trail records it.
pub struct Refused<'a> {
    pub principal: Option<&'a Principal>,
    /// The operation id (`change.approve`), the audit action.
    pub operation: &'a str,
    pub target: String,
    pub permission: Option<String>,
    pub request_id: Option<String>,
}

/// Audits a refused write (any 4xx answer but 404) of a known person. Refusals nobody can be
/// held to (no valid token, no known username) and the 429s of a running login delay would let
/// anyone fill the audit trail: they are counted and logged instead. Err: the entry could not be
/// written, and this 500 must be answered instead.
pub fn audit_refusal<'a>(
    app: &'a App,
    r: Refused<'a>,
    response: &Response,
    now: chrono::DateTime<chrono::Utc>,
) -> impl Future<Output = Result<(), Response>> + Send + 'a {
    // Read what is needed now: a `Response` is not `Sync`, so no borrow of it may be awaited.
    // A refusal the domain already audited (with its own details) is not written twice.
    let status = if response.extensions().get::<Audited>().is_some() {
        StatusCode::OK
    } else {
        response.status()
    };
    let refusal = response.extensions().get::<Refusal>().cloned();
    audit_refused(app, r, status, refusal, now)
}

async fn audit_refused(
    app: &App,
    r: Refused<'_>,
    status: StatusCode,
    refusal: Option<Refusal>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Response> {
    if !status.is_client_error() || status == StatusCode::NOT_FOUND {
        return Ok(());
    }
    let known = r.principal.is_some()
        || refusal.as_ref().is_some_and(|x| x.subject.is_some())
            && status != StatusCode::TOO_MANY_REQUESTS;
    if !known {
        metrics::counter!("unattributed_refusals_total", "status" => status.as_u16().to_string())
            .increment(1);
        tracing::info!(operation = %r.operation, status = status.as_u16(), "refused write not attributable to a user; not audited");
        return Ok(());
    }
    let actor = r
        .principal
        .map(|p| p.actor_name())
        .or_else(|| refusal.as_ref().and_then(|x| x.subject.clone()));
    // Only a signed-in person's refusals are budgeted: a failed login names the account it
    // tried, and anyone could spend that account's budget to hide what follows (failed logins
    // are bounded by the login delay instead).
    if let Some(name) = r.principal.map(|p| p.actor_name())
        && let Verdict::Suppress { first } = app.refusal_budget.take(&name, now)
    {
        metrics::counter!("audit_refusals_suppressed_total").increment(1);
        if first {
            tracing::warn!(actor = %name, operation = %r.operation, per_window = refusal_budget::PER_WINDOW,
                "refused writes of one person over the audit budget of this window: counted, not audited");
        }
        return Ok(());
    }
    let entry = Entry {
        actor_id: r.principal.map(|p| p.user_id),
        actor,
        action: r.operation.to_string(),
        target: Some(r.target),
        outcome: Outcome::Refused,
        code: refusal.as_ref().map(|x| x.code.clone()),
        reason: refusal.as_ref().map(|x| x.detail.clone()),
        policy_ids: refusal
            .as_ref()
            .map(|x| x.policy_ids.clone())
            .unwrap_or_default(),
        details: json!({"status": status.as_u16(), "permission": r.permission}),
        request_id: r.request_id,
    };
    if let Err(e) = crate::deed::Deed::audit_alone(app, &entry, now).await {
        tracing::error!(error = %e, "cannot write the audit entry of a refusal");
        return Err(
            ApiError::Domain(Error::Internal(anyhow::anyhow!("audit write failed")))
                .into_response(),
        );
    }
    Ok(())
}

/// The caller, admitted by the gate. Handlers of signed-in routes take this.
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| {
                ApiError::Domain(Error::Unauthenticated {
                    code: "unauthenticated",
                    message: "需要登录 / Sign-in required".into(),
                    subject: None,
                })
            })
    }
}
