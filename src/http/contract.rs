//! Completes the generated OpenAPI document so that it states every error a route can answer,
//! in one place rather than in each handler's annotation:
//! - every response has its `description` (OpenAPI 3.1 requires one);
//! - every error response is `application/problem+json` with the `Problem` schema;
//! - a protected operation documents 401 and 403; one with a body 400, 413, 415 and 422; one
//!   with parameters 400 and 422 (a control character in a path or query value); every
//!   operation 500 and 503 (a missed database turn or the request timeout), and every 503 its
//!   `Retry-After` header.
//!
//! What a handler documents itself (its description of the codes) is kept.

use serde_json::{Map, Value, json};

/// The standard errors and what they mean.
fn standard(status: &str) -> &'static str {
    match status {
        "400" => {
            "请求无法读取 / The request cannot be read (malformed_request, invalid_path, invalid_query)"
        }
        "401" => "需要有效的登录凭证 / A valid access token is required (unauthenticated)",
        "403" => {
            "没有执行此操作的权限 / Not permitted (forbidden; password_change_required: a temporary password's session may only change it; enrolment_required: a session opened to enrol a second factor may only do that; or the code of the rule that refused)"
        }
        "404" => "未找到 / Not found (not_found)",
        "409" => "与当前状态冲突 / Conflicts with the current state",
        "413" => "请求体过大 / The body is larger than 1 MiB (payload_too_large)",
        "415" => {
            "请求体须为 application/json / The body must be application/json (unsupported_media_type)"
        }
        "422" => {
            "内容不符合规则 / Readable but refused by a rule (invalid_body, invalid_field, invalid_text, …)"
        }
        "429" => "尝试次数过多 / Too many attempts (too_many_requests, with Retry-After)",
        "500" => "服务器内部错误 / Internal server error (internal_error)",
        "503" => {
            "服务暂不可用，请按 Retry-After 稍后重试 / Unavailable: the database was busy or the request took too long; retry after Retry-After seconds (unavailable)"
        }
        _ => "错误 / Error",
    }
}

fn reason(status: &str) -> String {
    status
        .parse::<u16>()
        .ok()
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
        .to_string()
}

fn problem_content() -> Value {
    json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
}

/// Completes `doc` (the JSON form of the generated document) in place.
pub fn complete(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops.iter_mut() {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                continue;
            }
            complete_operation(op);
        }
    }
    // The Problem document may carry members of its own (policy_ids, earliest_start, field, …).
    if let Some(problem) = doc.pointer_mut("/components/schemas/Problem")
        && let Some(p) = problem.as_object_mut()
    {
        p.insert("additionalProperties".into(), Value::Bool(true));
    }
}

fn complete_operation(op: &mut Value) {
    let protected = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
        });
    let has_body = op.get("requestBody").is_some();
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let Some(obj) = op.as_object_mut() else {
        return;
    };
    let responses = obj
        .entry("responses")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    let mut add: Vec<&str> = vec!["500", "503"];
    if protected {
        add.extend(["401", "403"]);
    }
    if has_body {
        add.extend(["400", "413", "415", "422"]);
    }
    if has_params {
        add.extend(["400", "422"]);
    }
    for status in add {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": standard(status)}));
    }
    for (status, resp) in responses.iter_mut() {
        let Some(r) = resp.as_object_mut() else {
            continue;
        };
        let described = r
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty());
        let error = status.starts_with('4') || status.starts_with('5');
        if !described {
            let d = if error {
                standard(status).to_string()
            } else {
                reason(status)
            };
            r.insert("description".into(), Value::from(d));
        }
        if error {
            r.insert("content".into(), problem_content());
        }
        if status == "503"
            && let Some(headers) = r
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        {
            headers
                .entry("Retry-After")
                .or_insert_with(retry_after_header);
        }
    }
}

fn retry_after_header() -> Value {
    json!({
        "description": "几秒后可重试 / Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protected_operation_with_a_body_gets_every_standard_error() {
        let mut doc = json!({"paths": {"/x/{id}": {"post": {
            "security": [{"bearer": ["x.do"]}],
            "parameters": [{"name": "id", "in": "path", "required": true}],
            "requestBody": {"content": {"application/json": {}}},
            "responses": {"201": {}, "409": {"description": "x_exists", "content": {"application/json": {}}}}
        }}}, "components": {"schemas": {"Problem": {"type": "object"}}}});
        complete(&mut doc);
        let r = &doc["paths"]["/x/{id}"]["post"]["responses"];
        for s in [
            "400", "401", "403", "409", "413", "415", "422", "500", "503",
        ] {
            assert!(r[s]["description"].is_string(), "{s}");
            assert!(
                r[s]["content"]["application/problem+json"]["schema"]["$ref"].is_string(),
                "{s}"
            );
        }
        assert!(r["503"]["headers"]["Retry-After"]["schema"].is_object());
        assert_eq!(r["201"]["description"], "Created");
        assert_eq!(r["409"]["description"], "x_exists");
        assert!(r["409"]["content"].get("application/json").is_none());
        assert_eq!(
            doc["components"]["schemas"]["Problem"]["additionalProperties"],
            true
        );
    }

    #[test]
    fn a_public_read_gets_no_401() {
        let mut doc = json!({"paths": {"/h": {"get": {"security": [{}], "responses": {"200": {"description": "ok"}}}}}});
        complete(&mut doc);
        let r = &doc["paths"]["/h"]["get"]["responses"];
        assert!(r.get("401").is_none());
        assert!(r.get("422").is_none());
        assert!(r["500"].is_object());
    }
}
