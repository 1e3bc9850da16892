//! Errors of the working-day calendar.

use thiserror::Error;

/// Why a calendar question could not be answered, or a calendar could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CalendarError {
    /// A day that the answer depends on lies in a year whose calendar is not loaded.
    /// The calendar never guesses: load the year (from the State Council's notice) first.
    #[error("the working-day calendar for {year} is not loaded / {year} 年工作日历尚未加载")]
    YearMissing {
        /// The year that is needed.
        year: i32,
    },
    /// A year calendar, a notice rule or an argument is not acceptable.
    #[error("{reason}")]
    Invalid {
        /// What is wrong, naming the offending date or value.
        reason: String,
    },
}

impl CalendarError {
    /// A stable machine-readable code (for problem+json `code`, logs and audit entries).
    pub fn code(&self) -> &'static str {
        match self {
            CalendarError::YearMissing { .. } => "calendar_year_missing",
            CalendarError::Invalid { .. } => "calendar_invalid",
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        CalendarError::Invalid {
            reason: reason.into(),
        }
    }
}
