//! Counts for management and compliance.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::rules::start_of_day;
use crate::App;
use crate::db::changes as db;
use crate::error::{Error, Result};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeReport {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub total: i64,
    pub by_category: BTreeMap<String, i64>,
    pub by_status: BTreeMap<String, i64>,
    pub by_outcome: BTreeMap<String, i64>,
    pub emergency: i64,
    /// Filings refused for late notice (from the audit trail).
    pub refused_insufficient_notice: i64,
    /// Changes tools reported with no approved change running (违规变更).
    pub unauthorized_changes: i64,
    /// succeeded / completed, when any completed.
    pub success_rate: Option<f64>,
}

/// Changes planned to start from `from` to `to` (inclusive, bank dates).
pub async fn changes(app: &App, from: NaiveDate, to: NaiveDate) -> Result<ChangeReport> {
    if to < from {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: "to 须不早于 from / to must not be before from".into(),
        });
    }
    let tz = app.policies.change.timezone;
    let bad = || Error::BadRequest {
        code: "invalid_range",
        message: "日期超出范围 / date out of range".into(),
    };
    let start = start_of_day(from, tz).ok_or_else(bad)?;
    let end = start_of_day(to.succ_opt().ok_or_else(bad)?, tz).ok_or_else(bad)?;
    let mut r = ChangeReport {
        from,
        to,
        total: 0,
        by_category: BTreeMap::new(),
        by_status: BTreeMap::new(),
        by_outcome: BTreeMap::new(),
        emergency: 0,
        refused_insufficient_notice: db::refusals(&app.db, "insufficient_notice", start, end)
            .await?,
        unauthorized_changes: crate::db::gate::between(&app.db, start, end, true)
            .await?
            .len() as i64,
        success_rate: None,
    };
    for (category, status, outcome, emergency, n) in db::counts(&app.db, start, end).await? {
        r.total += n;
        *r.by_category.entry(category).or_default() += n;
        *r.by_status.entry(status).or_default() += n;
        if let Some(o) = outcome {
            *r.by_outcome.entry(o).or_default() += n;
        }
        if emergency {
            r.emergency += n;
        }
    }
    let completed: i64 = r.by_outcome.values().sum();
    if completed > 0 {
        r.success_rate =
            Some(*r.by_outcome.get("succeeded").unwrap_or(&0) as f64 / completed as f64);
    }
    Ok(r)
}
