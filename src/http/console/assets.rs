//! 保密资料登记 / The Art. 21 register in the console: the confidential assets with their
//! disclosure requests and where each stands, registering an asset (`asset.manage`) and asking to
//! hand one to a third party (`disclosure.request`). The two approvals and the refusal are given
//! from the inbox of the manager and the compliance officer. Same domain functions as the API.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Session;
use super::pages::{error_page, frame, not_permitted, refused, render, with};
use crate::App;
use crate::assets::{self, CreateAsset, RequestDisclosure};
use crate::error::Error;

const TITLE: &str = "保密资料登记 / Confidential assets";

fn disclosure_state(s: &Session, d: &crate::db::assets::Disclosure) -> String {
    let lang = s.lang;
    match d.status.as_str() {
        "approved" => lang.tr(
            "已批准（电子银行部、合规部）",
            "approved (management and compliance)",
        ),
        "refused" => lang.tr("已拒绝", "refused"),
        _ => match (d.manager_approved_by, d.compliance_approved_by) {
            (Some(_), None) => lang.tr(
                "电子银行部已批准，待合规部",
                "management approved, waiting for compliance",
            ),
            (None, Some(_)) => lang.tr(
                "合规部已批准，待电子银行部",
                "compliance approved, waiting for management",
            ),
            _ => lang.tr("待审批", "waiting for approval"),
        },
    }
    .to_string()
}

async fn page(app: &App, s: &Session, extra: Value, status: StatusCode) -> Response {
    if !s.may(app, "asset.read") {
        return not_permitted(app, s);
    }
    let lang = s.lang;
    let tz = app.policies.change.timezone;
    let list = match assets::list(app).await {
        Ok(l) => l,
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    let mut rows = Vec::new();
    for a in &list {
        let ds = match assets::disclosures(app, a.id).await {
            Ok(d) => d,
            Err(e) => return error_page(app, Some(s), lang, e),
        };
        let disclosures: Vec<Value> = ds
            .iter()
            .map(|d| {
                json!({"id": d.id, "recipient": d.recipient, "purpose": d.purpose,
                       "requested_at": lang.moment(d.requested_at, tz),
                       "state": disclosure_state(s, d), "status": d.status,
                       "refusal_reason": d.refusal_reason})
            })
            .collect();
        let kind = match a.kind.as_str() {
            "document" => lang.tr("文档", "document"),
            "repository" => lang.tr("源代码库", "source repository"),
            other => other,
        };
        rows.push(
            json!({"id": a.id, "name": a.name, "kind": kind, "location": a.location,
                         "custodian": a.custodian, "department": a.department,
                         "disclosures": disclosures}),
        );
    }
    let ctx = with(
        with(
            frame(app, s, TITLE),
            json!({"assets": rows,
                   "can_manage": s.may(app, "asset.manage"),
                   "can_request": s.may(app, "disclosure.request")}),
        ),
        extra,
    );
    render("assets.html", ctx, status)
}

/// `GET /console/assets`.
pub async fn show(State(app): State<App>, s: Session) -> Response {
    page(&app, &s, json!({}), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct AssetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    custodian: String,
}

/// `POST /console/assets`: registers an asset, as `POST /api/v1/assets`.
pub async fn create(State(app): State<App>, s: Session, Form(f): Form<AssetForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = match s.acting(&app, "asset.manage") {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => {
            let req = CreateAsset {
                name: f.name.clone(),
                kind: f.kind.clone(),
                location: f.location.clone(),
                custodian: f.custodian.trim().to_string(),
                department: None,
            };
            assets::create(&app, &who, req).await.map(drop)
        }
    };
    answer(
        &app,
        &s,
        "asset.create",
        "POST /console/assets",
        result,
        json!({"form": {
        "name": f.name, "kind": f.kind, "location": f.location, "custodian": f.custodian}}),
    )
    .await
}

#[derive(Deserialize)]
pub struct DisclosureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    purpose: String,
}

/// `POST /console/assets/{id}/disclosures`: asks to hand the asset to a third party, as
/// `POST /api/v1/assets/{id}/disclosures`.
pub async fn request(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<DisclosureForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = match s.acting(&app, "disclosure.request") {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => {
            let req = RequestDisclosure {
                recipient: f.recipient,
                purpose: f.purpose,
            };
            assets::request(&app, &who, id, req).await.map(drop)
        }
    };
    let target = format!("POST /console/assets/{id}/disclosures");
    answer(&app, &s, "disclosure.request", &target, result, json!({})).await
}

async fn answer(
    app: &App,
    s: &Session,
    operation: &str,
    target: &str,
    result: Result<(), Error>,
    form: Value,
) -> Response {
    match result {
        Ok(()) => Redirect::to("/console/assets").into_response(),
        Err(e) => {
            let (status, text) = refused(app, s, operation, target.to_string(), e).await;
            page(
                app,
                s,
                with(json!({"flash": text, "flash_kind": "error"}), form),
                status,
            )
            .await
        }
    }
}
