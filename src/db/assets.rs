//! The confidential assets register and disclosure requests.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::{on_pool, on_tx};

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Asset {
    pub id: i64,
    pub name: String,
    /// `document` or `repository`.
    pub kind: String,
    pub location: String,
    pub custodian_id: i64,
    pub custodian: String,
    pub department: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! asset_select {
    () => {
        "SELECT a.id, a.name, a.kind, a.location, a.custodian_id, u.username AS custodian, \
         a.department, a.created_at, a.updated_at FROM assets a JOIN users u ON u.id = a.custodian_id"
    };
}

pub async fn insert_asset(
    tx: &mut Tx,
    name: &str,
    kind: &str,
    location: &str,
    custodian_id: i64,
    department: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    Ok(on_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO assets (name, kind, location, custodian_id, department, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id"
    )
    .bind(name)
    .bind(kind)
    .bind(location)
    .bind(custodian_id)
    .bind(department)
    .bind(now)
    .fetch_one(c)
    .await
    })?)
}

pub async fn list_assets(db: &Db) -> Result<Vec<Asset>> {
    let sql = concat!(asset_select!(), " ORDER BY a.name");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Asset>(sql)
        .fetch_all(p)
        .await)?)
}

pub async fn get_asset(db: &Db, id: i64) -> Result<Asset> {
    let sql = concat!(asset_select!(), " WHERE a.id = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Asset>(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

pub async fn get_asset_tx(tx: &mut Tx, id: i64) -> Result<Asset> {
    let sql = concat!(asset_select!(), " WHERE a.id = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Asset>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Disclosure {
    pub id: i64,
    pub asset_id: i64,
    pub recipient: String,
    pub purpose: String,
    pub requested_by: i64,
    pub requested_at: DateTime<Utc>,
    pub manager_approved_by: Option<i64>,
    pub manager_approved_at: Option<DateTime<Utc>>,
    pub compliance_approved_by: Option<i64>,
    pub compliance_approved_at: Option<DateTime<Utc>>,
    pub refused_by: Option<i64>,
    pub refused_at: Option<DateTime<Utc>>,
    pub refusal_reason: Option<String>,
    /// `requested`, `approved` (manager and compliance both approved) or `refused`.
    pub status: String,
}

macro_rules! disclosure_cols {
    () => {
        "id, asset_id, recipient, purpose, requested_by, requested_at, manager_approved_by, \
         manager_approved_at, compliance_approved_by, compliance_approved_at, refused_by, \
         refused_at, refusal_reason, status"
    };
}

pub async fn insert_disclosure(
    tx: &mut Tx,
    asset_id: i64,
    recipient: &str,
    purpose: &str,
    requested_by: i64,
    now: DateTime<Utc>,
) -> Result<Disclosure> {
    let sql = concat!(
        "INSERT INTO disclosures (asset_id, recipient, purpose, requested_by, requested_at, status) \
         VALUES ($1, $2, $3, $4, $5, 'requested') RETURNING ",
        disclosure_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Disclosure>(sql)
        .bind(asset_id)
        .bind(recipient)
        .bind(purpose)
        .bind(requested_by)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

pub async fn disclosures_of(db: &Db, asset_id: i64) -> Result<Vec<Disclosure>> {
    let sql = concat!(
        "SELECT ",
        disclosure_cols!(),
        " FROM disclosures WHERE asset_id = $1 ORDER BY id"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Disclosure>(sql)
        .bind(asset_id)
        .fetch_all(p)
        .await)?)
}

/// Disclosure requests still undecided, oldest first.
pub async fn undecided_disclosures(db: &Db, limit: i64) -> Result<Vec<Disclosure>> {
    let sql = concat!(
        "SELECT ",
        disclosure_cols!(),
        " FROM disclosures WHERE status = 'requested' ORDER BY id LIMIT $1"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Disclosure>(sql)
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

pub async fn disclosure_for_update(tx: &mut Tx, id: i64) -> Result<Disclosure> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(
            "SELECT ",
            disclosure_cols!(),
            " FROM disclosures WHERE id = $1 FOR UPDATE"
        ),
        Backend::Sqlite => concat!(
            "SELECT ",
            disclosure_cols!(),
            " FROM disclosures WHERE id = $1"
        ),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Disclosure>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// Stores the decision fields of `d` (approvals, refusal, status).
pub async fn update_disclosure(tx: &mut Tx, d: &Disclosure) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE disclosures SET manager_approved_by = $2, manager_approved_at = $3, \
         compliance_approved_by = $4, compliance_approved_at = $5, refused_by = $6, \
         refused_at = $7, refusal_reason = $8, status = $9 WHERE id = $1"
    )
    .bind(d.id)
    .bind(d.manager_approved_by)
    .bind(d.manager_approved_at)
    .bind(d.compliance_approved_by)
    .bind(d.compliance_approved_at)
    .bind(d.refused_by)
    .bind(d.refused_at)
    .bind(&d.refusal_reason)
    .bind(&d.status)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
