//! Counts for management and compliance.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
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

/// One week (Monday to Sunday, bank dates) of the reports page's charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Week {
    pub monday: NaiveDate,
    pub by_category: BTreeMap<String, i64>,
    pub emergency: i64,
    pub completed: i64,
    pub succeeded: i64,
    pub refused_insufficient_notice: i64,
    pub unauthorized_changes: i64,
}

fn monday_of(d: NaiveDate) -> NaiveDate {
    d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// The weeks touching `from`..=`to` (bank dates), each with the changes planned to start in it
/// (inside the period), the late-notice refusals and the unauthorized changes reported in it.
pub async fn weekly(app: &App, from: NaiveDate, to: NaiveDate) -> Result<Vec<Week>> {
    let (start, end) = bounds(app, from, to)?;
    if (to - from).num_days() > 366 {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: "按周统计的期间最长一年 / Weekly figures cover a year at most".into(),
        });
    }
    let tz = app.policies.change.timezone;
    let (starts, refusals, unauthorized) = tokio::try_join!(
        db::starts(&app.db, start, end),
        db::refusal_times(&app.db, "insufficient_notice", start, end),
        crate::db::gate::between(&app.db, start, end, true),
    )?;
    let mut weeks: BTreeMap<NaiveDate, Week> = BTreeMap::new();
    let mut monday = monday_of(from);
    while monday <= to {
        weeks.insert(
            monday,
            Week {
                monday,
                by_category: BTreeMap::new(),
                emergency: 0,
                completed: 0,
                succeeded: 0,
                refused_insufficient_notice: 0,
                unauthorized_changes: 0,
            },
        );
        monday += chrono::Duration::days(7);
    }
    let week_of = |t: chrono::DateTime<chrono::Utc>| monday_of(t.with_timezone(&tz).date_naive());
    for (at, category, emergency, outcome) in starts {
        if let Some(w) = weeks.get_mut(&week_of(at)) {
            *w.by_category.entry(category).or_default() += 1;
            w.emergency += i64::from(emergency);
            if let Some(o) = outcome {
                w.completed += 1;
                w.succeeded += i64::from(o == "succeeded");
            }
        }
    }
    for at in refusals {
        if let Some(w) = weeks.get_mut(&week_of(at)) {
            w.refused_insufficient_notice += 1;
        }
    }
    for e in unauthorized {
        if let Some(w) = weeks.get_mut(&week_of(e.occurred_at)) {
            w.unauthorized_changes += 1;
        }
    }
    Ok(weeks.into_values().collect())
}

/// `[00:00 of from, 00:00 after to)` in the bank's time zone, or why the range is not one.
fn bounds(
    app: &App,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
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
    Ok((start, end))
}

/// Changes planned to start from `from` to `to` (inclusive, bank dates).
pub async fn changes(app: &App, from: NaiveDate, to: NaiveDate) -> Result<ChangeReport> {
    let (start, end) = bounds(app, from, to)?;
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
