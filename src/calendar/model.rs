//! The data of one year, as published by the State Council and kept in `policies/calendars/cn/YYYY.toml`.

use std::collections::HashSet;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use super::error::CalendarError;

/// Oldest year a calendar may describe.
pub const MIN_YEAR: i32 = 1990;
/// Latest year a calendar may describe.
pub const MAX_YEAR: i32 = 2200;

/// A dated entry of a year's arrangement: a day off or a make-up working day, with its festival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedDay {
    /// The day. In TOML a local date (`2026-10-01`); a `"2026-10-01"` string is accepted too
    /// (that is also how it serialises, e.g. to JSON).
    #[serde(deserialize_with = "date_de::deserialize")]
    pub date: NaiveDate,
    /// The festival the day belongs to, e.g. `国庆节`.
    pub name: String,
}

impl NamedDay {
    /// A named day.
    pub fn new(date: NaiveDate, name: impl Into<String>) -> Self {
        NamedDay {
            date,
            name: name.into(),
        }
    }
}

/// One year of China's official calendar: statutory days off and weekend days made working days.
/// Every other Monday–Friday is a working day and every other Saturday/Sunday a rest day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearCalendar {
    /// The calendar year.
    pub year: i32,
    /// The notice the days come from, e.g. `国务院办公厅关于2026年部分节假日安排的通知`.
    pub source: String,
    /// Statutory days off (放假), including those that fall on a weekend.
    #[serde(default)]
    pub days_off: Vec<NamedDay>,
    /// Saturdays and Sundays that are working days (调休上班).
    #[serde(default)]
    pub makeup_workdays: Vec<NamedDay>,
}

/// Where in a year's data a violation is, so that a loader can point at the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locus {
    Year,
    Source,
    /// The `occurrence`-th (0-based) listing of `date`.
    Date {
        date: NaiveDate,
        occurrence: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub locus: Locus,
    pub reason: String,
}

impl YearCalendar {
    /// Checks the year's data: year within 1990..=2200, a non-empty source, every date inside the
    /// year, no date listed twice (across both lists), names not empty, and every make-up working
    /// day a Saturday or Sunday.
    pub fn validate(&self) -> Result<(), CalendarError> {
        self.check().map_err(|v| CalendarError::invalid(v.reason))
    }

    pub(crate) fn check(&self) -> Result<(), Violation> {
        let year = self.year;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(Violation {
                locus: Locus::Year,
                reason: format!(
                    "year {year} is outside {MIN_YEAR}..={MAX_YEAR} / 年份 {year} 超出范围"
                ),
            });
        }
        if self.source.trim().is_empty() {
            return Err(Violation {
                locus: Locus::Source,
                reason: format!(
                    "year {year}: source must name the notice the days come from / 缺少通知来源"
                ),
            });
        }
        let mut seen = HashSet::new();
        let all = self
            .days_off
            .iter()
            .map(|d| (d, false))
            .chain(self.makeup_workdays.iter().map(|d| (d, true)));
        for (day, makeup) in all {
            let date = day.date;
            let first = Locus::Date {
                date,
                occurrence: 0,
            };
            if date.year() != year {
                return Err(Violation {
                    locus: first,
                    reason: format!("{date} is not in {year} / 日期 {date} 不在 {year} 年内"),
                });
            }
            if !seen.insert(date) {
                return Err(Violation {
                    locus: Locus::Date {
                        date,
                        occurrence: 1,
                    },
                    reason: format!("{date} is listed twice / 日期 {date} 重复"),
                });
            }
            if day.name.trim().is_empty() {
                return Err(Violation {
                    locus: first,
                    reason: format!("{date} has an empty name / 日期 {date} 缺少名称"),
                });
            }
            if makeup && !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                return Err(Violation {
                    locus: first,
                    reason: format!(
                        "make-up working day {date} is a {}, not a Saturday or Sunday / 调休上班日 {date} 不是周六或周日",
                        date.weekday()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Parses exactly `YYYY-MM-DD` (no sign, no missing zeros, no surrounding text).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)
}

/// Deserialises a date from a TOML local date or a `YYYY-MM-DD` string.
mod date_de {
    use std::fmt;

    use chrono::NaiveDate;
    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        d.deserialize_any(DateVisitor)
    }

    struct DateVisitor;

    impl<'de> Visitor<'de> for DateVisitor {
        type Value = NaiveDate;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a date YYYY-MM-DD")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<NaiveDate, E> {
            super::parse_date(s)
                .ok_or_else(|| E::custom(format!("invalid date {s:?}, expected YYYY-MM-DD")))
        }

        // A TOML datetime reaches serde as a one-entry map; toml's own type decodes it.
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NaiveDate, A::Error> {
            let dt =
                toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
            match (dt.date, dt.time, dt.offset) {
                (Some(d), None, None) => {
                    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                        .ok_or_else(|| de::Error::custom(format!("invalid date {dt}")))
                }
                _ => Err(de::Error::custom(format!(
                    "expected a date YYYY-MM-DD without a time, got {dt}"
                ))),
            }
        }
    }
}
