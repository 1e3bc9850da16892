//! The working-day calendar as the service keeps it: the years shipped in `policies/calendars/`
//! plus the years loaded at run time into the database (which win for the same year). Every
//! instance sees a newly loaded year on its next question: the cache is keyed by the table's
//! row count and highest revision, read once per use.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::RwLock;

use crate::App;
use crate::audit::Entry;
use crate::calendar::{DayInfo, EarliestStart, NamedDay, WorkingCalendar, YearCalendar};
use crate::changes::calendar_error;
use crate::db::calendar as db;
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;

type Signature = (i64, Option<i64>);

/// The merged calendar, rebuilt when the database's years change.
#[derive(Default)]
pub struct CalendarCache {
    current: RwLock<Option<(Signature, WorkingCalendar)>>,
}

impl App {
    /// The working-day calendar in force now.
    pub async fn calendar(&self) -> Result<WorkingCalendar> {
        let sig = db::signature(&self.db).await?;
        if let Some((s, cal)) = &*self.calendar_cache.current.read().await
            && *s == sig
        {
            return Ok(cal.clone());
        }
        let mut years = self.policies.calendar_years.clone();
        for (year, json) in db::years(&self.db).await? {
            let cal: YearCalendar = serde_json::from_str(&json)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored calendar {year}: {e}")))?;
            years.retain(|y| y.year != year);
            years.push(cal);
        }
        let cal = WorkingCalendar::new(years)
            .map_err(|e| Error::Internal(anyhow::anyhow!("calendar: {e}")))?;
        *self.calendar_cache.current.write().await = Some((sig, cal.clone()));
        Ok(cal)
    }
}

/// A year of the official notice, as `PUT /api/v1/working-days/years/{year}` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct YearInput {
    /// e.g. 国务院办公厅关于2027年部分节假日安排的通知
    pub source: String,
    pub days_off: Vec<DayInput>,
    pub makeup_workdays: Vec<DayInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayInput {
    /// YYYY-MM-DD
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// e.g. 春节
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct YearLoaded {
    pub year: i32,
    pub source: String,
    pub days_off: usize,
    pub makeup_workdays: usize,
    /// True when the year replaced one loaded before.
    pub replaced: bool,
}

/// Validates and stores a year; audited; in force at once, for every instance.
pub async fn load_year(
    app: &App,
    who: &Principal,
    year: i32,
    input: YearInput,
) -> Result<YearLoaded> {
    let to_days = |v: Vec<DayInput>| {
        v.into_iter()
            .map(|d| NamedDay::new(d.date, d.name))
            .collect::<Vec<_>>()
    };
    let cal = YearCalendar {
        year,
        source: input.source.trim().to_string(),
        days_off: to_days(input.days_off),
        makeup_workdays: to_days(input.makeup_workdays),
    };
    if let Some(bad) = cal
        .days_off
        .iter()
        .chain(&cal.makeup_workdays)
        .find(|d| d.name.trim().is_empty())
    {
        return Err(Error::invalid(
            "calendar_invalid",
            format!("{} 缺少节日名称 / {} needs a name", bad.date, bad.date),
        ));
    }
    cal.validate()
        .map_err(|e| Error::invalid("calendar_invalid", e.to_string()))?;
    let json = serde_json::to_string(&cal).map_err(anyhow::Error::new)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let replaced = db::upsert(&mut tx, year, &cal.source, &json, who.user_id, now).await?;
    let entry = Entry::by(who, "calendar.load_year", format!("calendar:{year}")).with_details(
        json!({"year": year, "source": cal.source, "days_off": cal.days_off.len(),
                             "makeup_workdays": cal.makeup_workdays.len(), "replaced": replaced}),
    );
    tx.commit(&entry, now).await?;
    Ok(YearLoaded {
        year,
        source: cal.source,
        days_off: cal.days_off.len(),
        makeup_workdays: cal.makeup_workdays.len(),
        replaced,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct YearStatus {
    pub year: i32,
    pub source: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub years: Vec<YearStatus>,
    /// Today in the bank's time zone.
    #[schema(value_type = String, format = Date)]
    pub today: NaiveDate,
    pub next_year_loaded: bool,
    /// Set from 1 November while next year's calendar is missing.
    pub warning: Option<String>,
}

pub async fn status(app: &App) -> Result<Status> {
    let cal = app.calendar().await?;
    let today = app
        .now()
        .with_timezone(&app.policies.change.timezone)
        .date_naive();
    let next = today.year() + 1;
    let next_year_loaded = cal.has_year(next);
    let warning = (!next_year_loaded && today.month() >= 11).then(|| {
        format!(
            "{next} 年工作日历尚未加载：国务院办公厅发布放假安排后请尽快加载，否则跨年的变更通知将被拒绝。 / \
             The {next} working-day calendar is not loaded yet: load the official notice as soon as it is published, \
             or notices reaching into {next} will be refused."
        )
    });
    Ok(Status {
        years: cal
            .years()
            .into_iter()
            .filter_map(|y| {
                cal.year(y).map(|c| YearStatus {
                    year: y,
                    source: c.source.clone(),
                })
            })
            .collect(),
        today,
        next_year_loaded,
        warning,
    })
}

/// The earliest start for a notice given on `notified_on`, under the default notice rule.
pub async fn earliest_start(app: &App, notified_on: NaiveDate) -> Result<EarliestStart> {
    let cal = app.calendar().await?;
    cal.earliest_start(notified_on, &app.policies.change.notice)
        .map_err(calendar_error)
}

/// Longest range `GET /api/v1/working-days` answers: three years.
pub const MAX_RANGE_MONTHS: u32 = 36;

pub async fn days(app: &App, from: NaiveDate, to: NaiveDate) -> Result<Vec<DayInfo>> {
    if to < from {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: "to 须不早于 from / to must not be before from".into(),
        });
    }
    let limit = from.checked_add_months(chrono::Months::new(MAX_RANGE_MONTHS));
    if limit.is_none_or(|l| to >= l) {
        return Err(Error::BadRequest {
            code: "range_too_long",
            message: "日期范围不得超过 3 年 / The range may not exceed 3 years".into(),
        });
    }
    let cal = app.calendar().await?;
    cal.days(from, to).map_err(calendar_error)
}
