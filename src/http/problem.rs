//! Every error leaves as `application/problem+json` (RFC 9457) with a stable `code`.
//! This is the one place where domain errors become status codes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;

/// The problem document, as the OpenAPI schema shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the `code` says what happened.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// 中文 / English.
    pub detail: String,
    /// Stable machine-readable code, e.g. `invalid_credentials`, `insufficient_notice`.
    pub code: String,
}

/// Attached to refusals so the guard can audit them (who tried, the code, the deciding policies).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: String,
    pub detail: String,
    pub policy_ids: Vec<String>,
    pub subject: Option<String>,
}

/// Marks a refusal whose audit entry the domain already wrote (with its own details), so the
/// guard does not write a second one.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The HTTP layer's error: a domain error, or a request that could not be read.
#[derive(Debug)]
pub enum ApiError {
    Domain(Error),
    Request {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl From<crate::db::StoreError> for ApiError {
    fn from(e: crate::db::StoreError) -> Self {
        ApiError::Domain(e.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn rejection(status: StatusCode, text: String) -> ApiError {
    let code = match status {
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "malformed_request",
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::Request {
        status,
        code,
        detail: format!(
            "请求无法处理 / The request cannot be processed: {}",
            without_values(&text)
        ),
    }
}

/// serde's messages quote the value they could not take (`invalid type: string "…"`,
/// `unknown variant `…``): a password typed into the wrong field would reach the response and
/// the audit trail. Every quoted value is replaced by `…`; the names of fields and what was
/// expected (after the word `expected`) stay, they come from the schema, not from the client.
fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut expected = false;
    while let Some(at) = rest.find(['"', '`']) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        expected |= before.contains("expected");
        let quote = from.as_bytes()[0] as char;
        // The closing quote: serde writes strings with Rust's escapes (`\"` inside).
        let mut end = None;
        let mut escaped = false;
        for (i, c) in from.char_indices().skip(1) {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let names_a_field = quote == '`' && out.trim_end().ends_with("field");
        // serde and axum write backticked values without escaping: a value holding a backtick
        // would close the quote early, so such a value is cut up to what was expected.
        if quote == '`' && !expected && !names_a_field {
            let to = from.find(", expected").unwrap_or(from.len());
            out.push_str("`…`");
            rest = &from[to..];
            continue;
        }
        let Some(end) = end else {
            // An unclosed quote: nothing after it is kept.
            out.push(quote);
            out.push('…');
            return out;
        };
        let quoted = &from[..=end];
        if expected || names_a_field {
            out.push_str(quoted);
        } else {
            out.push(quote);
            out.push('…');
            out.push(quote);
        }
        rest = &from[end + 1..];
    }
    out.push_str(rest);
    out
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let mut e = rejection(StatusCode::BAD_REQUEST, r.body_text());
        if let ApiError::Request { code, .. } = &mut e {
            *code = "invalid_query";
        }
        e
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        let mut e = rejection(StatusCode::BAD_REQUEST, r.body_text());
        if let ApiError::Request { code, .. } = &mut e {
            *code = "invalid_path";
        }
        e
    }
}

fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_string()
}

/// Builds a problem+json response with extra members.
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    extra: Map<String, Value>,
) -> Response {
    let mut body = Map::new();
    body.insert("type".into(), Value::from("about:blank"));
    body.insert("title".into(), Value::from(title(status)));
    body.insert("status".into(), Value::from(status.as_u16()));
    body.insert("detail".into(), Value::from(detail));
    body.insert("code".into(), Value::from(code));
    for (k, v) in extra {
        body.entry(k).or_insert(v);
    }
    let mut resp = (status, Value::Object(body).to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut audited = false;
        let (status, code, detail, extra, policy_ids, subject, retry) = match self {
            ApiError::Request {
                status,
                code,
                detail,
            } => (status, code, detail, Map::new(), vec![], None, None),
            ApiError::Domain(e) => {
                audited = e.is_audited();
                match &e {
                    Error::Integrity { message, .. } => {
                        tracing::error!(code = e.code(), "integrity error: {message}")
                    }
                    Error::Internal(err) => tracing::error!(error = ?err, "internal error"),
                    _ => {}
                }
                let retry = e.retry_after_secs();
                (
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    e.code(),
                    e.detail(),
                    e.extra(),
                    e.policy_ids().to_vec(),
                    e.subject().map(str::to_string),
                    retry,
                )
            }
        };
        let mut resp = problem(status, code, &detail, extra);
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if audited {
            resp.extensions_mut().insert(Audited);
        }
        resp.extensions_mut().insert(Refusal {
            code: code.to_string(),
            detail,
            policy_ids,
            subject,
        });
        resp
    }
}

/// `Json<T>` whose rejections are problem documents. The body is read as JSON first and every
/// string in it checked by [`crate::text::first_forbidden_in_json`]: a control character
/// (a NUL, an escape) in any field is a 422 `invalid_text` naming the field, never a 500 of
/// the database, whether or not the domain validates that field itself.
pub struct Json<T>(pub T);

/// The body as `T`, after the control-character check.
fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    if let Some((field, at, c)) = crate::text::first_forbidden_in_json(&v) {
        return Err(ApiError::Domain(crate::text::invalid_text(&field, at, c)));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let text = if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        };
        rejection(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Failed to deserialize the JSON body into the target type: {text}"),
        )
    })
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<Value>::from_request(req, state).await?;
        decode(v).map(Json)
    }
}

/// `Option<Json<T>>`: no body (no content type) is `None`; a body must still be valid JSON.
impl<T, S> axum::extract::OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let v =
            <axum::Json<Value> as axum::extract::OptionalFromRequest<S>>::from_request(req, state)
                .await?;
        v.map(|axum::Json(v)| decode(v).map(Json)).transpose()
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections are problem documents.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A control character in a parameter (`?system=%00`) is refused before any query.
        let raw = parts.uri.query().unwrap_or_default();
        if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(raw) {
            for (name, value) in &pairs {
                // A bad name is never echoed (it would reach the audit trail).
                if let Some((at, c)) = crate::text::forbidden_char(name, crate::text::Lines::One) {
                    return Err(ApiError::Domain(crate::text::invalid_text("<name>", at, c)));
                }
                if let Err(e) = crate::text::clean(name, value, crate::text::Lines::One) {
                    return Err(ApiError::Domain(e));
                }
            }
        }
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

/// `Path<T>` whose rejections are problem documents.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A control character in a path segment (`/systems/%00`) is refused before any query.
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &raw {
                if let Err(e) = crate::text::clean(name, value, crate::text::Lines::One) {
                    return Err(ApiError::Domain(e));
                }
            }
        }
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(v))
    }
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Form {
        risk: Option<Level>,
        count: Option<i64>,
        name: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Level {
        Low,
        High,
    }

    fn message(json: &str) -> String {
        serde_json::from_str::<Form>(json).unwrap_err().to_string()
    }

    #[test]
    fn serde_messages_lose_their_values() {
        for (json, kept) in [
            (r#"{"risk": "Hunter2-secret"}"#, "expected `low` or `high`"),
            (r#"{"count": "Hunter2-secret"}"#, "expected i64"),
            (r#"{"count": "Hunter2 \" `secret"}"#, "expected i64"),
            (r#"{"name": 42, "x": 1}"#, "expected a string"),
            (r#"{"Hunter2-secret": 1}"#, "unknown field `Hunter2-secret`"),
        ] {
            let raw = message(json);
            let clean = without_values(&raw);
            assert!(clean.contains(kept), "{raw} -> {clean}");
            if !json.contains("\"Hunter2-secret\":") {
                assert!(!clean.contains("Hunter2"), "{raw} -> {clean}");
                assert!(!clean.contains("secret"), "{raw} -> {clean}");
            }
        }
        assert_eq!(
            without_values("invalid type: integer `42`"),
            "invalid type: integer `…`"
        );
        assert_eq!(without_values("unclosed \"Hunter2"), "unclosed \"…");
        assert_eq!(
            without_values("unknown variant `Hun`ter2`, expected `low` or `high`"),
            "unknown variant `…`, expected `low` or `high`"
        );
        assert_eq!(
            without_values("Cannot parse `12`ab` to a `u64`"),
            "Cannot parse `…`"
        );
        assert_eq!(
            without_values("missing field `reason` at line 1"),
            "missing field `reason` at line 1"
        );
    }
}
