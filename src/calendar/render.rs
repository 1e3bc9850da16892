//! Text output: a month view for terminals, and the lines of the `earliest-start` CLI command.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

use super::error::CalendarError;
use super::model::parse_date;
use super::working::{DayKind, NoticeRule, WorkingCalendar};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Mark after a day off.
pub const MARK_DAY_OFF: char = '*';
/// Mark after a make-up working day.
pub const MARK_MAKEUP: char = '+';

/// Columns of a terminal taken by `s` (CJK characters take two).
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

impl WorkingCalendar {
    /// A month like `cal` prints it (weeks start on Monday), days off marked `*` and make-up
    /// working days `+`, followed by a legend of the month's named days.
    pub fn render_month(&self, year: i32, month: u32) -> Result<String, CalendarError> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)
            .ok_or_else(|| CalendarError::invalid(format!("no month {year}-{month} / 月份无效")))?;
        let days: Vec<_> = self
            .days(first, last_of_month(first))?
            .into_iter()
            .collect();
        let english = MONTHS.get(first.month0() as usize).copied().unwrap_or("");
        let grid_width: usize = 7 * 4 - 1;
        let title = format!("{year}年{month}月 / {english} {year}");
        let pad = grid_width.saturating_sub(display_width(&title)) / 2;

        let mut out = String::new();
        let _ = writeln!(out, "{}{title}", " ".repeat(pad));
        out.push_str("Mo  Tu  We  Th  Fr  Sa  Su\n");
        let mut line = "    ".repeat(first.weekday().num_days_from_monday() as usize);
        for info in &days {
            let mark = match info.kind {
                DayKind::Holiday => MARK_DAY_OFF,
                DayKind::MakeupWorkday => MARK_MAKEUP,
                DayKind::Workday | DayKind::Weekend => ' ',
            };
            let _ = write!(line, "{:>2}{mark} ", info.date.day());
            if info.date.weekday().num_days_from_monday() == 6 {
                out.push_str(line.trim_end());
                out.push('\n');
                line.clear();
            }
        }
        if !line.trim().is_empty() {
            out.push_str(line.trim_end());
            out.push('\n');
        }

        let _ = writeln!(
            out,
            "{MARK_DAY_OFF} day off 放假   {MARK_MAKEUP} make-up working day 调休上班   (plain Sat/Sun: weekend)"
        );
        // Legend: runs of consecutive days off, then each make-up working day, by date.
        let mut legend: Vec<(NaiveDate, String)> = Vec::new();
        let mut i = 0;
        while let Some(info) = days.get(i) {
            match info.kind {
                DayKind::Holiday => {
                    let mut names: Vec<&str> = Vec::new();
                    let mut last = info.date;
                    while let Some(d) = days.get(i).filter(|d| d.kind == DayKind::Holiday) {
                        if let Some(n) = d.name.as_deref().filter(|n| !names.contains(n)) {
                            names.push(n);
                        }
                        last = d.date;
                        i += 1;
                    }
                    let range = if last == info.date {
                        info.date.format("%m-%d").to_string()
                    } else {
                        format!("{}..{}", info.date.format("%m-%d"), last.format("%m-%d"))
                    };
                    legend.push((
                        info.date,
                        format!("{range} {MARK_DAY_OFF} {}", names.join("、")),
                    ));
                    continue;
                }
                DayKind::MakeupWorkday => legend.push((
                    info.date,
                    format!(
                        "{} {MARK_MAKEUP} 调休上班 {}",
                        info.date.format("%m-%d"),
                        info.name.as_deref().unwrap_or("")
                    ),
                )),
                DayKind::Workday | DayKind::Weekend => {}
            }
            i += 1;
        }
        if legend.is_empty() {
            out.push_str("no days off or make-up working days this month / 本月无放假调休安排\n");
        }
        for (_, text) in legend {
            out.push_str(text.trim_end());
            out.push('\n');
        }
        Ok(out)
    }
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    let mut last = first;
    while let Some(next) = last.succ_opt().filter(|d| d.month() == first.month()) {
        last = next;
    }
    last
}

/// For the CLI: one line per argument, `NOTICE<TAB>EARLIEST` or `NOTICE<TAB>error: …`
/// (malformed date, missing year, invalid rule). The flag tells whether every line succeeded.
pub fn earliest_start_lines(
    cal: &WorkingCalendar,
    rule: &NoticeRule,
    args: &[String],
) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for arg in args {
        let answer = match parse_date(arg) {
            None => Err(format!(
                "malformed date {arg:?}, expected YYYY-MM-DD / 日期格式应为 YYYY-MM-DD"
            )),
            Some(date) => cal
                .earliest_start(date, rule)
                .map(|e| e.earliest_start.to_string())
                .map_err(|e| e.to_string()),
        };
        let _ = match answer {
            Ok(start) => writeln!(out, "{arg}\t{start}"),
            Err(reason) => {
                all_ok = false;
                writeln!(out, "{arg}\terror: {reason}")
            }
        };
    }
    (out, all_ok)
}
