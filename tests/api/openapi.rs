//! The API contract: the served OpenAPI document validates as OpenAPI 3.1 (against the OpenAPI
//! Initiative's own JSON Schema, shipped beside this file), and every operation states every
//! error it can answer, as a problem document.

use serde_json::Value;

use crate::harness::{Backend, TestServer, body};

const OAS_31_SCHEMA: &str = include_str!("oas-3.1-schema.json");

async fn served_document() -> Value {
    let srv = TestServer::start(Backend::Sqlite).await;
    let doc = body(
        srv.client
            .get(srv.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    srv.stop().await;
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_validates_as_openapi_3_1() {
    let doc = served_document().await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schema: Value = serde_json::from_str(OAS_31_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(20)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The validator itself can fail: a response without its description is refused.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    assert!(!validator.is_valid(&broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_its_errors_as_problems() {
    let doc = served_document().await;
    let mut missing = Vec::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let name = format!("{} {path}", method.to_uppercase());
            let responses = op["responses"].as_object().unwrap();
            let protected = op["security"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| !r.as_object().unwrap().is_empty());
            let mut needed = vec!["500", "503"];
            if protected {
                needed.extend(["401", "403"]);
            }
            if op.get("requestBody").is_some() {
                needed.extend(["400", "413", "415", "422"]);
            }
            for s in needed {
                if !responses.contains_key(s) {
                    missing.push(format!("{name}: no {s}"));
                }
            }
            for (status, r) in responses {
                if r["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    missing.push(format!("{name} {status}: no description"));
                }
                if (status.starts_with('4') || status.starts_with('5'))
                    && r["content"]["application/problem+json"]["schema"]["$ref"]
                        != "#/components/schemas/Problem"
                {
                    missing.push(format!("{name} {status}: not a problem document"));
                }
                if status == "503" && !r["headers"]["Retry-After"].is_object() {
                    missing.push(format!("{name} 503: no Retry-After"));
                }
            }
        }
    }
    assert!(operations > 50, "{operations}");
    assert!(missing.is_empty(), "{missing:#?}");
    let problem = &doc["components"]["schemas"]["Problem"];
    for member in ["type", "title", "status", "detail", "code"] {
        assert!(problem["properties"][member].is_object(), "{member}");
    }
}
