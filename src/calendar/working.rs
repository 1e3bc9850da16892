//! The working-day calendar over all loaded years, and the notice-period computation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::error::CalendarError;
use super::model::{MAX_YEAR, MIN_YEAR, NamedDay, YearCalendar};

/// What kind of day a date is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    /// An ordinary Monday–Friday.
    Workday,
    /// An ordinary Saturday or Sunday.
    Weekend,
    /// A statutory day off (may fall on a weekend).
    Holiday,
    /// A Saturday or Sunday that is a working day (调休上班).
    MakeupWorkday,
}

/// One day as the calendar sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayInfo {
    pub date: NaiveDate,
    /// Whether the day counts as a working day.
    pub working: bool,
    pub kind: DayKind,
    /// The festival, for holidays and make-up working days.
    pub name: Option<String>,
}

/// The notice rule (Art. 20): notify at least `working_days` working days in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticeRule {
    /// Working days of notice, 1..=30 (default 3).
    pub working_days: u32,
    /// Whether the notice day itself counts when it is a working day (default false, as Civil
    /// Code Art. 201 reads: a period counted in days starts on the next day).
    pub count_notice_day: bool,
}

impl Default for NoticeRule {
    fn default() -> Self {
        NoticeRule {
            working_days: 3,
            count_notice_day: false,
        }
    }
}

impl NoticeRule {
    /// Largest accepted `working_days`.
    pub const MAX_WORKING_DAYS: u32 = 30;

    /// Checks `working_days` is within 1..=30.
    pub fn validate(&self) -> Result<(), CalendarError> {
        if (1..=Self::MAX_WORKING_DAYS).contains(&self.working_days) {
            Ok(())
        } else {
            Err(CalendarError::invalid(format!(
                "working_days must be within 1..={}, got {} / 提前通知工作日数须在 1 至 {} 之间",
                Self::MAX_WORKING_DAYS,
                self.working_days,
                Self::MAX_WORKING_DAYS
            )))
        }
    }
}

/// The answer of [`WorkingCalendar::earliest_start`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EarliestStart {
    pub notified_on: NaiveDate,
    /// The change may start from 00:00 of this day (the day after the last counted working day).
    pub earliest_start: NaiveDate,
    /// The working days counted, in order; the last one is the day before `earliest_start`.
    pub working_days_counted: Vec<NaiveDate>,
}

/// Working days of one year: bit `ordinal0` set when the day is a working day.
type YearBits = [u64; 6];

struct Inner {
    years: BTreeMap<i32, YearCalendar>,
    /// Indexed by `year - MIN_YEAR`; `None` when the year is not loaded.
    bits: Vec<Option<YearBits>>,
}

/// China's working-day calendar over the loaded years. Cheap to clone (shared, immutable).
///
/// Any question about a day of a year that is not loaded answers
/// [`CalendarError::YearMissing`]; the calendar never guesses.
#[derive(Clone)]
pub struct WorkingCalendar {
    inner: Arc<Inner>,
}

impl fmt::Debug for WorkingCalendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkingCalendar")
            .field("years", &self.years())
            .finish()
    }
}

impl Default for WorkingCalendar {
    /// A calendar with no year loaded.
    fn default() -> Self {
        WorkingCalendar {
            inner: Arc::new(Inner {
                years: BTreeMap::new(),
                bits: Vec::new(),
            }),
        }
    }
}

fn year_index(year: i32) -> Option<usize> {
    usize::try_from(year.checked_sub(MIN_YEAR)?).ok()
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

fn set_bit(bits: &mut YearBits, ordinal0: u32, working: bool) {
    let (word, bit) = ((ordinal0 / 64) as usize, ordinal0 % 64);
    if let Some(w) = bits.get_mut(word) {
        if working {
            *w |= 1 << bit;
        } else {
            *w &= !(1 << bit);
        }
    }
}

fn year_bits(cal: &YearCalendar) -> YearBits {
    let mut bits = [0u64; 6];
    let mut day = NaiveDate::from_ymd_opt(cal.year, 1, 1);
    while let Some(d) = day.filter(|d| d.year() == cal.year) {
        set_bit(&mut bits, d.ordinal0(), !is_weekend(d));
        day = d.succ_opt();
    }
    for d in &cal.days_off {
        set_bit(&mut bits, d.date.ordinal0(), false);
    }
    for d in &cal.makeup_workdays {
        set_bit(&mut bits, d.date.ordinal0(), true);
    }
    bits
}

fn sort_days(days: &mut [NamedDay]) {
    days.sort_by_key(|d| d.date);
}

impl WorkingCalendar {
    /// Builds a calendar from validated years; fails on an invalid year or a year given twice.
    /// The day lists are kept sorted by date.
    pub fn new(years: Vec<YearCalendar>) -> Result<Self, CalendarError> {
        let mut map = BTreeMap::new();
        for mut cal in years {
            cal.validate()?;
            sort_days(&mut cal.days_off);
            sort_days(&mut cal.makeup_workdays);
            let year = cal.year;
            if map.insert(year, cal).is_some() {
                return Err(CalendarError::invalid(format!(
                    "year {year} is given twice / {year} 年重复"
                )));
            }
        }
        Ok(Self::from_map(map))
    }

    fn from_map(years: BTreeMap<i32, YearCalendar>) -> Self {
        let len = year_index(MAX_YEAR).map_or(0, |i| i + 1);
        let mut bits = vec![None; len];
        for (year, cal) in &years {
            if let Some(slot) = year_index(*year).and_then(|i| bits.get_mut(i)) {
                *slot = Some(year_bits(cal));
            }
        }
        WorkingCalendar {
            inner: Arc::new(Inner { years, bits }),
        }
    }

    /// The loaded years, ascending.
    pub fn years(&self) -> Vec<i32> {
        self.inner.years.keys().copied().collect()
    }

    /// Whether `year` is loaded.
    pub fn has_year(&self, year: i32) -> bool {
        self.inner.years.contains_key(&year)
    }

    /// The loaded data of `year`.
    pub fn year(&self, year: i32) -> Option<&YearCalendar> {
        self.inner.years.get(&year)
    }

    /// A new calendar with `cal` added, or replacing the loaded data of its year.
    pub fn with_year(&self, mut cal: YearCalendar) -> Result<WorkingCalendar, CalendarError> {
        cal.validate()?;
        sort_days(&mut cal.days_off);
        sort_days(&mut cal.makeup_workdays);
        let mut years = self.inner.years.clone();
        years.insert(cal.year, cal);
        Ok(Self::from_map(years))
    }

    /// Whether `date` is a working day.
    #[inline]
    pub fn is_working(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        let year = date.year();
        match year_index(year).and_then(|i| self.inner.bits.get(i)) {
            Some(Some(bits)) => {
                let o = date.ordinal0();
                Ok(bits
                    .get((o / 64) as usize)
                    .is_some_and(|w| (w >> (o % 64)) & 1 == 1))
            }
            _ => Err(CalendarError::YearMissing { year }),
        }
    }

    /// The working time between two instants: the part of `[from, to)` that falls inside
    /// `[opens, closes)` (wall time in `tz`) of working days, in whole minutes. Counts at most
    /// 400 days (longer waits are capped; every caller compares with far less).
    pub fn working_minutes(
        &self,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        tz: Tz,
        (opens, closes): (NaiveTime, NaiveTime),
    ) -> Result<i64, CalendarError> {
        if to <= from {
            return Ok(0);
        }
        let mut total = 0;
        let mut day = from.with_timezone(&tz).date_naive();
        let last = to.with_timezone(&tz).date_naive();
        for _ in 0..400 {
            if day > last {
                break;
            }
            if self.is_working(day)? {
                let at = |t: NaiveTime| {
                    tz.from_local_datetime(&day.and_time(t))
                        .earliest()
                        .map(|x| x.with_timezone(&Utc))
                };
                if let (Some(open), Some(close)) = (at(opens), at(closes)) {
                    let (a, b) = (open.max(from), close.min(to));
                    if b > a {
                        total += (b - a).num_minutes();
                    }
                }
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        Ok(total)
    }

    /// The kind (and festival name) of `date`.
    pub fn day(&self, date: NaiveDate) -> Result<DayInfo, CalendarError> {
        let year = date.year();
        let cal = self
            .inner
            .years
            .get(&year)
            .ok_or(CalendarError::YearMissing { year })?;
        let find = |days: &[NamedDay]| {
            days.binary_search_by_key(&date, |d| d.date)
                .ok()
                .and_then(|i| days.get(i))
                .map(|d| d.name.clone())
        };
        let (working, kind, name) = if let Some(name) = find(&cal.days_off) {
            (false, DayKind::Holiday, Some(name))
        } else if let Some(name) = find(&cal.makeup_workdays) {
            (true, DayKind::MakeupWorkday, Some(name))
        } else if is_weekend(date) {
            (false, DayKind::Weekend, None)
        } else {
            (true, DayKind::Workday, None)
        };
        Ok(DayInfo {
            date,
            working,
            kind,
            name,
        })
    }

    /// Every day from `from` to `to`, both included. `from` after `to` is invalid.
    pub fn days(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<DayInfo>, CalendarError> {
        if from > to {
            return Err(CalendarError::invalid(format!(
                "from {from} is after to {to} / 起始日期晚于结束日期"
            )));
        }
        from.iter_days()
            .take_while(|d| *d <= to)
            .map(|d| self.day(d))
            .collect()
    }

    /// The first day a change notified on `notified_on` may start under `rule`.
    ///
    /// The notice day is not counted (unless `rule.count_notice_day` and it is a working day);
    /// then `rule.working_days` working days must pass in full; the change may start from 00:00
    /// of the day after the last of them. That day itself needs no calendar data; every day
    /// examined while counting does (else [`CalendarError::YearMissing`]).
    pub fn earliest_start(
        &self,
        notified_on: NaiveDate,
        rule: &NoticeRule,
    ) -> Result<EarliestStart, CalendarError> {
        rule.validate()?;
        let wanted = rule.working_days as usize;
        let mut counted = Vec::with_capacity(wanted);
        if rule.count_notice_day && self.is_working(notified_on)? {
            counted.push(notified_on);
        }
        let mut day = notified_on;
        while counted.len() < wanted {
            day = next_day(day)?;
            if self.is_working(day)? {
                counted.push(day);
            }
        }
        Ok(EarliestStart {
            notified_on,
            earliest_start: next_day(day)?,
            working_days_counted: counted,
        })
    }
}

fn next_day(date: NaiveDate) -> Result<NaiveDate, CalendarError> {
    date.succ_opt()
        .ok_or_else(|| CalendarError::invalid(format!("no day after {date}")))
}
