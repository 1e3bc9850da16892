//! `cargo bench --bench calendar`: earliest_start answers per second over the shipped calendar,
//! against a naive Mon–Fri count (no holiday lookup) as a baseline. std::time::Instant only.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use changeguard::calendar::{NoticeRule, WorkingCalendar, load_dir};
use chrono::{Datelike, NaiveDate, Weekday};

const RUN: Duration = Duration::from_secs(2);

/// Notice `n` Mon–Fri days ahead, ignoring holidays and make-up days.
fn naive_earliest_start(notified_on: NaiveDate, n: u32) -> Option<NaiveDate> {
    let mut day = notified_on;
    let mut counted = 0;
    while counted < n {
        day = day.succ_opt()?;
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            counted += 1;
        }
    }
    day.succ_opt()
}

/// Runs `f` over every notice day, round after round, for about `RUN`; returns answers/second.
fn measure(days: &[NaiveDate], mut f: impl FnMut(NaiveDate) -> bool) -> (f64, u64) {
    let start = Instant::now();
    let mut answers = 0u64;
    while start.elapsed() < RUN {
        for &day in days {
            if !f(black_box(day)) {
                eprintln!("no answer for {day}");
                std::process::exit(1);
            }
        }
        answers += days.len() as u64;
    }
    (answers as f64 / start.elapsed().as_secs_f64(), answers)
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/calendars/cn");
    let t = Instant::now();
    let years = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let cal = WorkingCalendar::new(years).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "loaded {} years ({}..={}) in {:.1} ms",
        cal.years().len(),
        cal.years().first().copied().unwrap_or_default(),
        cal.years().last().copied().unwrap_or_default(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let (first, last) = (
        NaiveDate::from_ymd_opt(2004, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2026, 12, 20).unwrap_or_default(),
    );
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    println!("notice days per round: {} ({first}..={last})", days.len());

    let rule = NoticeRule::default();
    let (rate, n) = measure(&days, |d| black_box(cal.earliest_start(d, &rule)).is_ok());
    println!("earliest_start (calendar, 3 working days): {rate:>12.0} answers/s ({n} answers)");

    let counting = NoticeRule {
        working_days: 3,
        count_notice_day: true,
    };
    let (rate, n) = measure(&days, |d| {
        black_box(cal.earliest_start(d, &counting)).is_ok()
    });
    println!("earliest_start (count_notice_day = true):  {rate:>12.0} answers/s ({n} answers)");

    let (rate, n) = measure(&days, |d| black_box(cal.is_working(d)).is_ok());
    println!("is_working:                                {rate:>12.0} answers/s ({n} answers)");

    let (rate, n) = measure(&days, |d| black_box(naive_earliest_start(d, 3)).is_some());
    println!("baseline, naive Mon-Fri count (no lookup): {rate:>12.0} answers/s ({n} answers)");
}
