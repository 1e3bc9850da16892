//! What every request and response goes through, in one middleware: a request id, the
//! request's log span, a timeout, panic catching, problem documents for bare errors, the
//! security headers and the request metrics.
//!
//! One function instead of a dozen nested layers (tower-http's request-id, trace, set-header,
//! catch-panic and timeout layers, and two more middlewares): each layer wrapped the response
//! future once more, and under load the cheap routes spent more time in the layers than in
//! their handlers (`benches/RESULTS.md`, issue 13).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{OnceLock, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::problem::problem;

/// A request still unanswered after this is answered 503.
pub const TIMEOUT: Duration = Duration::from_secs(30);

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Set on every response, whatever a handler set: no handler may weaken these.
const ENFORCED_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    ),
    (
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    ),
];

/// How long a client should wait before retrying a 503 (a missed database turn clears in well
/// under a second; a directory outage lasts longer, and machines retry anyway).
const RETRY_AFTER_SECONDS: &str = "2";

/// Set on every response that has not set its own (the console sends its pages with
/// `Referrer-Policy: same-origin`; static assets may be cached).
const DEFAULT_HEADERS: [(HeaderName, HeaderValue); 2] = [
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    ),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
];

/// A request id a client may choose: 1 to 128 of `A-Z a-z 0-9 . _ : -`. Anything else (spaces
/// that would forge log fields, huge values that would bloat the audit trail) is replaced.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// The middleware (`axum::middleware::from_fn(envelope::around)`).
pub async fn around(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    // The client's id is kept (a proxy or a pipeline may have set it) when it is a plain
    // token, else replaced by a new one (the handlers and the audit trail see that one).
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if acceptable_id(v) => v.clone(),
        _ => {
            let v = HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("-"));
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
            v
        }
    };
    // The URI's path only: query strings may carry feed tokens.
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %req.uri().path(),
        request_id = %id.to_str().unwrap_or("-"),
    );

    let answered = tokio::time::timeout(TIMEOUT, caught(next.run(req)))
        .instrument(span.clone())
        .await;
    let mut resp = match answered {
        Ok(Some(resp)) => problem_for_bare_errors(resp),
        Ok(None) => {
            tracing::error!(parent: &span, "a request handler panicked; the process lives on");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "服务器内部错误 / Internal server error",
                Default::default(),
            )
        }
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "请求处理超时，请稍后重试 / The request took too long; try again later",
            Default::default(),
        ),
    };

    let status = resp.status();
    let latency = started.elapsed();
    if status.is_server_error() {
        tracing::error!(parent: &span, status = status.as_u16(), latency_ms = latency.as_millis() as u64, "response failed");
    } else {
        // The access log, at debug (`CHANGEGUARD_LOG=info,changeguard::access=debug`): at info
        // it cost more than the request itself under load, and every deed is in the audit
        // trail and every request in the metrics.
        tracing::debug!(target: "changeguard::access", parent: &span, status = status.as_u16(), latency_ms = latency.as_millis() as u64, "answered");
    }
    let headers = resp.headers_mut();
    headers.entry(X_REQUEST_ID).or_insert(id);
    for (name, value) in ENFORCED_HEADERS {
        headers.insert(name, value);
    }
    for (name, value) in DEFAULT_HEADERS {
        headers.entry(name).or_insert(value);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // A busy database or a directory that is down: tell machines when to ask again.
        headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    count(&method, route.as_ref(), status, latency);
    resp
}

/// Runs the handler; `None` if it panicked.
async fn caught(fut: impl Future<Output = Response>) -> Option<Response> {
    let mut fut = pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(resp)) => Poll::Ready(Some(resp)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        }
    })
    .await
}

/// Turns error responses that are not problem documents yet (405 from the router, 413 from a
/// body limit, …) into problem documents, so clients only ever see one error shape.
fn problem_for_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // Problem documents, and the console's own HTML error pages, pass as they are.
    let is_problem = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json")
            || v.as_bytes().starts_with(b"text/html")
    });
    if is_problem {
        return resp;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut out = problem(status, code, reason, Default::default());
    copy_headers(
        resp.headers(),
        out.headers_mut(),
        [header::ALLOW, header::RETRY_AFTER],
    );
    out
}

fn copy_headers<const N: usize>(from: &HeaderMap, to: &mut HeaderMap, names: [HeaderName; N]) {
    for name in names {
        if let Some(v) = from.get(&name) {
            to.insert(name, v.clone());
        }
    }
}

/// The request metrics' handles, by route template, method and status: registered once, so
/// a request only counts (no label strings built, no registry lookup).
type Handles = (metrics::Counter, metrics::Histogram);
type ByRoute = std::collections::HashMap<String, Vec<(&'static str, u16, Handles)>>;

/// The method as a label: the standard ones by name, any other as `OTHER` (a client must not
/// be able to grow the metrics without bound).
fn method_label(m: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .iter()
        .position(|s| s == m)
        .map_or("OTHER", |i| NAMES[i])
}

fn count(method: &Method, route: Option<&MatchedPath>, status: StatusCode, latency: Duration) {
    static HANDLES: OnceLock<RwLock<ByRoute>> = OnceLock::new();
    // Handles made before the recorder is installed would count nowhere.
    let _ = super::ops::recorder();
    let handles = HANDLES.get_or_init(Default::default);
    let method = method_label(method);
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let status = status.as_u16();
    let found = handles.read().ok().and_then(|by_route| {
        by_route
            .get(route)?
            .iter()
            .find_map(|(m, s, h)| (*m == method && *s == status).then(|| h.clone()))
    });
    let (counter, histogram) = found.unwrap_or_else(|| {
        let labels = [
            ("method", method.to_string()),
            ("route", route.to_string()),
            ("status", status.to_string()),
        ];
        let h = (
            metrics::counter!("http_requests_total", &labels),
            metrics::histogram!("http_request_duration_seconds", &labels),
        );
        if let Ok(mut by_route) = handles.write() {
            let entry = by_route.entry(route.to_string()).or_default();
            if !entry.iter().any(|(m, s, _)| *m == method && *s == status) {
                entry.push((method, status, h.clone()));
            }
        }
        h
    });
    counter.increment(1);
    histogram.record(latency.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_invent_metric_labels_with_methods() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }

    #[test]
    fn only_plain_request_ids_are_kept() {
        for ok in ["abc-123", "0190a1b2-c3d4.e5:f6_7", &"x".repeat(128)] {
            assert!(acceptable_id(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in ["", "a b", "a=b", "a\"b", &"x".repeat(129), "你好"] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert!(!acceptable_id(&v), "{bad}");
        }
    }

    #[test]
    fn a_bare_error_becomes_a_problem_and_keeps_its_allow_header() {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        let out = problem_for_bare_errors(resp);
        assert_eq!(out.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(out.headers()[header::ALLOW], "GET");
        assert_eq!(
            out.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
