//! The pure rules of a change request: its life cycle, the notice rule, freeze windows and the
//! planned window. No clock, no database: `now` and the calendar are arguments.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::calendar::{CalendarError, NoticeRule, WorkingCalendar};
use crate::policy::FreezeWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Submitted,
    Approved,
    Rejected,
    InProgress,
    Completed,
    Cancelled,
    Expired,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Submitted,
        Status::Approved,
        Status::Rejected,
        Status::InProgress,
        Status::Completed,
        Status::Cancelled,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Still planned or running: takes part in conflicts.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Submitted | Status::Approved | Status::InProgress
        )
    }
}

/// What can happen to a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Approve,
    Reject,
    Start,
    Complete,
    Cancel,
    Expire,
    Reschedule,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Approve => "approve",
            Step::Reject => "reject",
            Step::Start => "start",
            Step::Complete => "complete",
            Step::Cancel => "cancel",
            Step::Expire => "expire",
            Step::Reschedule => "reschedule",
        }
    }
}

/// The life cycle: `submitted → approved | rejected`; `approved → in_progress → completed`;
/// `submitted | approved → cancelled`; `approved → expired`; rescheduling sends `submitted |
/// approved` back to `submitted`. `None`: not allowed from this status.
pub fn next(from: Status, step: Step) -> Option<Status> {
    use Status::*;
    match (from, step) {
        (Submitted, Step::Approve) => Some(Approved),
        (Submitted, Step::Reject) => Some(Rejected),
        (Approved, Step::Start) => Some(InProgress),
        (InProgress, Step::Complete) => Some(Completed),
        (Submitted | Approved, Step::Cancel) => Some(Cancelled),
        (Approved, Step::Expire) => Some(Expired),
        (Submitted | Approved, Step::Reschedule) => Some(Submitted),
        _ => None,
    }
}

/// Why a planned start is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeRefusal {
    /// Too close to the notice: may start from `earliest_start` (00:00, bank time).
    TooLate {
        notified_on: NaiveDate,
        earliest_start: NaiveDate,
        working_days: u32,
    },
    Calendar(CalendarError),
}

/// The notice date: the day of `notified_at` in the bank's time zone.
pub fn notice_date(notified_at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    notified_at.with_timezone(&tz).date_naive()
}

/// 00:00 of `date` in the bank's time zone, as an instant.
pub fn start_of_day(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    date.and_hms_opt(0, 0, 0)?
        .and_local_timezone(tz)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Checks a planned start against a notice given on `notified_on`. Returns the earliest start.
pub fn check_notice(
    calendar: &WorkingCalendar,
    rule: &NoticeRule,
    tz: Tz,
    notified_on: NaiveDate,
    planned_start: DateTime<Utc>,
) -> Result<NaiveDate, NoticeRefusal> {
    let earliest = calendar
        .earliest_start(notified_on, rule)
        .map_err(NoticeRefusal::Calendar)?
        .earliest_start;
    let from = start_of_day(earliest, tz).ok_or_else(|| {
        NoticeRefusal::Calendar(CalendarError::Invalid {
            reason: format!("no midnight on {earliest}"),
        })
    })?;
    if planned_start < from {
        return Err(NoticeRefusal::TooLate {
            notified_on,
            earliest_start: earliest,
            working_days: rule.working_days,
        });
    }
    Ok(earliest)
}

/// The freeze window a planned window of `category` overlaps, if any.
pub fn frozen_by<'a>(
    windows: &'a [FreezeWindow],
    category: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<&'a FreezeWindow> {
    windows.iter().find(|w| {
        (w.categories.is_empty() || w.categories.iter().any(|c| c == category))
            && start < w.end.with_timezone(&Utc)
            && end > w.start.with_timezone(&Utc)
    })
}

/// Why a planned window is not acceptable.
pub fn window_problem(start: DateTime<Utc>, end: DateTime<Utc>, max_days: u32) -> Option<String> {
    if end <= start {
        return Some(
            "计划结束时间必须晚于开始时间 / planned_end must be after planned_start".into(),
        );
    }
    if end - start > TimeDelta::days(i64::from(max_days)) {
        return Some(format!(
            "变更窗口不得超过 {max_days} 天 / a change window may last at most {max_days} days"
        ));
    }
    None
}

/// Two windows overlap (half-open intervals).
pub fn overlaps(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;

    use super::*;

    fn calendar() -> WorkingCalendar {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/calendars/cn");
        WorkingCalendar::new(crate::calendar::load_dir(&dir).unwrap()).unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn every_transition() {
        use Status::*;
        let steps = [
            Step::Approve,
            Step::Reject,
            Step::Start,
            Step::Complete,
            Step::Cancel,
            Step::Expire,
            Step::Reschedule,
        ];
        let mut allowed = Vec::new();
        for s in Status::ALL {
            for step in steps {
                if let Some(to) = next(s, step) {
                    allowed.push((s, step, to));
                }
            }
        }
        assert_eq!(
            allowed,
            vec![
                (Submitted, Step::Approve, Approved),
                (Submitted, Step::Reject, Rejected),
                (Submitted, Step::Cancel, Cancelled),
                (Submitted, Step::Reschedule, Submitted),
                (Approved, Step::Start, InProgress),
                (Approved, Step::Cancel, Cancelled),
                (Approved, Step::Expire, Expired),
                (Approved, Step::Reschedule, Submitted),
                (InProgress, Step::Complete, Completed),
            ]
        );
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn notice_is_refused_one_day_early_and_accepted_on_the_earliest_day() {
        let cal = calendar();
        let rule = NoticeRule::default();
        // Notice Fri 2026-11-27 → earliest Thu 2026-12-03.
        let on = date(2026, 11, 27);
        let late = check_notice(&cal, &rule, Shanghai, on, at(2026, 12, 2, 23, 59));
        assert_eq!(
            late,
            Err(NoticeRefusal::TooLate {
                notified_on: on,
                earliest_start: date(2026, 12, 3),
                working_days: 3
            })
        );
        assert_eq!(
            check_notice(&cal, &rule, Shanghai, on, at(2026, 12, 3, 0, 0)),
            Ok(date(2026, 12, 3))
        );
        // 2026-12-29: needs 2027, not loaded.
        let missing = check_notice(
            &cal,
            &rule,
            Shanghai,
            date(2026, 12, 29),
            at(2027, 2, 1, 0, 0),
        );
        assert_eq!(
            missing,
            Err(NoticeRefusal::Calendar(CalendarError::YearMissing {
                year: 2027
            }))
        );
    }

    #[test]
    fn the_notice_date_is_the_bank_date() {
        // 2026-11-26 17:00 UTC is already 2026-11-27 01:00 in Shanghai.
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 17, 0, 0).unwrap();
        assert_eq!(notice_date(t, Shanghai), date(2026, 11, 27));
        assert_eq!(
            start_of_day(date(2026, 12, 3), Shanghai),
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 16, 0, 0).unwrap())
        );
    }

    #[test]
    fn windows() {
        assert!(window_problem(at(2026, 12, 3, 1, 0), at(2026, 12, 3, 1, 0), 14).is_some());
        assert!(window_problem(at(2026, 12, 3, 1, 0), at(2026, 12, 3, 2, 0), 14).is_none());
        assert!(window_problem(at(2026, 12, 3, 1, 0), at(2026, 12, 18, 2, 0), 14).is_some());
        let a = (at(2026, 12, 3, 1, 0), at(2026, 12, 3, 3, 0));
        assert!(overlaps(a, (at(2026, 12, 3, 2, 0), at(2026, 12, 3, 4, 0))));
        assert!(!overlaps(a, (at(2026, 12, 3, 3, 0), at(2026, 12, 3, 4, 0))));
    }

    #[test]
    fn freeze() {
        let w = FreezeWindow {
            name: "年终决算".into(),
            start: chrono::DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00").unwrap(),
            end: chrono::DateTime::parse_from_rfc3339("2027-01-02T00:00:00+08:00").unwrap(),
            categories: vec!["database".into()],
        };
        let ws = [w];
        assert!(
            frozen_by(
                &ws,
                "database",
                at(2026, 12, 31, 22, 0),
                at(2027, 1, 1, 2, 0)
            )
            .is_some()
        );
        assert!(
            frozen_by(
                &ws,
                "hardware",
                at(2026, 12, 31, 22, 0),
                at(2027, 1, 1, 2, 0)
            )
            .is_none()
        );
        assert!(
            frozen_by(
                &ws,
                "database",
                at(2026, 12, 30, 22, 0),
                at(2026, 12, 31, 0, 0)
            )
            .is_none()
        );
    }
}
