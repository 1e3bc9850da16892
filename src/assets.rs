//! Confidential assets (Art. 21): the register of development documents and source-code
//! repositories with their custodians, and requests to disclose one to a third party, which
//! need a `manager` and a second approver from `compliance`. Every step is audited.

use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::audit::Entry;
use crate::db::StoreError;
use crate::db::assets::{self as db, Asset, Disclosure};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::Principal;
use crate::text::{self, Lines};

fn asset_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "asset" },
        o => o.into(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAsset {
    pub name: String,
    /// `document` or `repository`.
    pub kind: String,
    /// Where it is kept (repository URL, archive shelf, document system path).
    pub location: String,
    /// Username of the custodian.
    pub custodian: String,
    /// Default: the custodian's department.
    pub department: Option<String>,
}

pub async fn create(app: &App, who: &Principal, req: CreateAsset) -> Result<Asset> {
    let now = app.now();
    text::required("name", &req.name, 200, Lines::One)?;
    text::required("location", &req.location, 500, Lines::One)?;
    if !matches!(req.kind.as_str(), "document" | "repository") {
        return Err(Error::invalid(
            "invalid_kind",
            "kind 须为 document 或 repository / kind must be document or repository",
        ));
    }
    let custodian = crate::accounts::active_user(app, &req.custodian)
        .await?
        .ok_or_else(|| Error::invalid("unknown_user", "没有该保管人 / No such active custodian"))?;
    let department = req
        .department
        .clone()
        .unwrap_or(custodian.department.clone());
    let mut tx = Deed::open(app).await?;
    let id = db::insert_asset(
        &mut tx,
        req.name.trim(),
        &req.kind,
        req.location.trim(),
        custodian.id,
        &department,
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "asset_exists",
            "同名资产已存在 / An asset with this name already exists",
        ),
        o => o.into(),
    })?;
    let entry = Entry::by(who, "asset.create", format!("asset:{id}")).with_details(
        json!({"name": req.name.trim(), "kind": req.kind, "custodian": custodian.username}),
    );
    tx.commit(&entry, now).await?;
    Ok(db::get_asset(&app.db, id).await?)
}

pub async fn list(app: &App) -> Result<Vec<Asset>> {
    Ok(db::list_assets(&app.db).await?)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDisclosure {
    /// The third party receiving the asset.
    pub recipient: String,
    pub purpose: String,
}

pub async fn request(
    app: &App,
    who: &Principal,
    asset_id: i64,
    req: RequestDisclosure,
) -> Result<Disclosure> {
    let now = app.now();
    let asset = db::get_asset(&app.db, asset_id)
        .await
        .map_err(asset_not_found)?;
    text::required("recipient", &req.recipient, 200, Lines::One)?;
    text::required("purpose", &req.purpose, 1000, Lines::Many)?;
    let mut tx = Deed::open(app).await?;
    let d = db::insert_disclosure(
        &mut tx,
        asset_id,
        req.recipient.trim(),
        req.purpose.trim(),
        who.user_id,
        now,
    )
    .await?;
    let entry = Entry::by(who, "disclosure.request", format!("asset:{asset_id}"))
        .with_reason(req.purpose.trim())
        .with_details(json!({"disclosure_id": d.id, "recipient": d.recipient}));
    let notice = Bulletin::new(
        app,
        &format!("保密资料对外提供申请：{}", asset.name),
        &format!(
            "Request to hand a confidential asset to a third party: {}",
            asset.name
        ),
    )
    .fact(app, "申请人", "Requested by", person(who))
    .fact(
        app,
        "审批",
        "Approval",
        app.notifier.templates.pick(
            "须电子银行部管理员与合规部各一人审批",
            "needs one manager and one compliance officer",
        ),
    );
    let notice = disclosure_facts(app, notice, &asset, &d);
    let parties = Parties {
        requester: Some(who.user_id),
        custodian: Some(asset.custodian_id),
        ..Parties::default()
    };
    notify::commit_with_bulletin(
        app,
        tx,
        ("disclosure_requested", parties, &notice),
        &entry,
        now,
    )
    .await?;
    Ok(d)
}

pub async fn disclosures(app: &App, asset_id: i64) -> Result<Vec<Disclosure>> {
    db::get_asset(&app.db, asset_id)
        .await
        .map_err(asset_not_found)?;
    Ok(db::disclosures_of(&app.db, asset_id).await?)
}

/// Approves as `manager` or as `compliance` (the first of the caller's roles whose approval is
/// still missing). The requester never approves; nobody fills both approvals.
pub async fn approve(app: &App, who: &Principal, id: i64) -> Result<Disclosure> {
    decide(app, who, id, None).await
}

pub async fn refuse(app: &App, who: &Principal, id: i64, reason: &str) -> Result<Disclosure> {
    text::required("reason", reason, 1000, Lines::Many)?;
    decide(app, who, id, Some(reason.trim())).await
}

/// Which of the two approvals a person gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approver {
    Manager,
    Compliance,
}

/// Whether `who` may still decide `d` at all: it is undecided, not their own request, and
/// they have not approved it already.
fn may_decide(who: &Principal, d: &Disclosure) -> Result<()> {
    if d.status != "requested" {
        let (zh, en) = match d.status.as_str() {
            "approved" => ("已批准", "approved"),
            "refused" => ("已拒绝", "refused"),
            _ => ("已处理", "decided"),
        };
        return Err(Error::conflict(
            "invalid_transition",
            format!("披露申请{zh} / The disclosure request is already {en}"),
        ));
    }
    if d.requested_by == who.user_id {
        return Err(Error::Forbidden {
            code: "self_approval",
            message: "申请人不能审批自己的披露申请 / The requester never decides their own request"
                .into(),
            policy_ids: vec![],
        });
    }
    if [d.manager_approved_by, d.compliance_approved_by].contains(&Some(who.user_id)) {
        return Err(Error::Forbidden {
            code: "second_approver_required",
            message: "须由另一人作第二审批 / A different person must give the second approval"
                .into(),
            policy_ids: vec![],
        });
    }
    Ok(())
}

/// The approval `who` would give to `d` (manager's or compliance's, the first of their roles
/// still missing), or why they may not approve it. The inbox asks the same question.
pub fn approval_of(who: &Principal, d: &Disclosure) -> Result<Approver> {
    may_decide(who, d)?;
    let holds = |r: &str| who.roles.iter().any(|x| x == r);
    if holds("manager") && d.manager_approved_by.is_none() {
        Ok(Approver::Manager)
    } else if holds("compliance") && d.compliance_approved_by.is_none() {
        Ok(Approver::Compliance)
    } else {
        Err(Error::Forbidden {
            code: "approver_role_required",
            message: "需要电子银行部管理员和合规部各一人审批；您的角色的审批已有 / One manager and one compliance officer approve; the approval your roles can give is already there".into(),
            policy_ids: vec![],
        })
    }
}

async fn decide(app: &App, who: &Principal, id: i64, refusal: Option<&str>) -> Result<Disclosure> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let mut d = db::disclosure_for_update(&mut tx, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: "disclosure" },
            o => o.into(),
        })?;
    let action = match refusal {
        Some(reason) => {
            may_decide(who, &d)?;
            d.refused_by = Some(who.user_id);
            d.refused_at = Some(now);
            d.refusal_reason = Some(reason.to_string());
            d.status = "refused".into();
            "disclosure.refuse"
        }
        None => {
            match approval_of(who, &d)? {
                Approver::Manager => {
                    d.manager_approved_by = Some(who.user_id);
                    d.manager_approved_at = Some(now);
                }
                Approver::Compliance => {
                    d.compliance_approved_by = Some(who.user_id);
                    d.compliance_approved_at = Some(now);
                }
            }
            "disclosure.approve"
        }
    };
    if d.manager_approved_by.is_some() && d.compliance_approved_by.is_some() {
        d.status = "approved".into();
    }
    db::update_disclosure(&mut tx, &d).await?;
    let mut entry = Entry::by(who, action, format!("asset:{}", d.asset_id))
        .with_details(json!({"disclosure_id": d.id, "status": d.status}));
    if let Some(r) = refusal {
        entry = entry.with_reason(r);
    }
    let asset = db::get_asset_tx(&mut tx, d.asset_id).await?;
    let (zh, en) = match d.status.as_str() {
        "approved" => ("已批准", "approved"),
        "refused" => ("已驳回", "refused"),
        _ if d.manager_approved_by.is_some() => (
            "电子银行部已审批，待合规部审批",
            "approved by management, waiting for compliance",
        ),
        _ => (
            "合规部已审批，待电子银行部审批",
            "approved by compliance, waiting for management",
        ),
    };
    let notice = Bulletin::new(
        app,
        &format!("保密资料对外提供申请{zh}：{}", asset.name),
        &format!("Disclosure of {} {en}", asset.name),
    )
    .fact(app, "审批人", "Decided by", person(who))
    .comment(refusal);
    let notice = disclosure_facts(app, notice, &asset, &d);
    let parties = Parties {
        requester: Some(d.requested_by),
        custodian: Some(asset.custodian_id),
        ..Parties::default()
    };
    notify::commit_with_bulletin(
        app,
        tx,
        ("disclosure_decided", parties, &notice),
        &entry,
        now,
    )
    .await?;
    Ok(d)
}

/// "Display Name (username)", as notices name people.
pub(crate) fn person(who: &Principal) -> String {
    format!("{} ({})", who.display_name, who.username)
}

/// The facts every disclosure notice carries.
fn disclosure_facts(app: &App, b: Bulletin, asset: &Asset, d: &Disclosure) -> Bulletin {
    b.fact(
        app,
        "资料",
        "Asset",
        format!("{} ({}, {})", asset.name, asset.kind, asset.location),
    )
    .fact(app, "保管人", "Custodian", &asset.custodian)
    .fact(app, "接收方", "Third party", &d.recipient)
    .fact(app, "用途", "Purpose", &d.purpose)
    .fact(app, "申请编号", "Request", d.id)
    .link(app, &format!("/console/assets#asset-{}", asset.id))
}
