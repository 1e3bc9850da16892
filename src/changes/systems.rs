//! The systems register: what changes touch.

use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::audit::Entry;
use crate::db::StoreError;
use crate::db::changes::{self as db, System};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;
use crate::text::{self, Lines};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSystem {
    /// Short stable key, e.g. `cs-platform`: lowercase letters, digits, `-` and `_`.
    pub key: String,
    /// e.g. 客户服务平台
    pub name: String,
    pub owner_department: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPatch {
    pub name: Option<String>,
    pub owner_department: Option<String>,
}

pub async fn create(app: &App, who: &Principal, req: NewSystem) -> Result<System> {
    let key_ok = (2..=64).contains(&req.key.len())
        && req
            .key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !key_ok {
        return Err(Error::invalid(
            "invalid_key",
            "key 须为 2–64 个小写字母、数字、- 或 _ / key must be 2–64 lowercase letters, digits, - or _",
        ));
    }
    text::required("name", &req.name, 200, Lines::One)?;
    text::required("owner_department", &req.owner_department, 200, Lines::One)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let sys = db::insert_system(
        &mut tx,
        &req.key,
        req.name.trim(),
        req.owner_department.trim(),
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "system_exists",
            "该系统已登记 / This system is already registered",
        ),
        other => other.into(),
    })?;
    let entry = Entry::by(who, "system.create", format!("system:{}", sys.key))
        .with_details(json!({"name": sys.name, "owner_department": sys.owner_department}));
    tx.commit(&entry, now).await?;
    Ok(sys)
}

pub async fn update(app: &App, who: &Principal, key: &str, req: SystemPatch) -> Result<System> {
    if let Some(n) = &req.name {
        text::required("name", n, 200, Lines::One)?;
    }
    if let Some(d) = &req.owner_department {
        text::required("owner_department", d, 200, Lines::One)?;
    }
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let sys = db::update_system(
        &mut tx,
        key,
        req.name.as_deref().map(str::trim),
        req.owner_department.as_deref().map(str::trim),
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::NotFound => Error::NotFound { what: "system" },
        other => other.into(),
    })?;
    let entry = Entry::by(who, "system.update", format!("system:{key}"))
        .with_details(json!({"name": sys.name, "owner_department": sys.owner_department}));
    tx.commit(&entry, now).await?;
    Ok(sys)
}
