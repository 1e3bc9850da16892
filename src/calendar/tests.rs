use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;

use super::*;

fn d(s: &str) -> NaiveDate {
    parse_date(s).unwrap_or_else(|| panic!("bad test date {s}"))
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/calendars/cn")
}

fn shipped() -> &'static WorkingCalendar {
    static CAL: OnceLock<WorkingCalendar> = OnceLock::new();
    CAL.get_or_init(|| {
        let years = load_dir(&shipped_dir()).unwrap_or_else(|e| panic!("{e}"));
        WorkingCalendar::new(years).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn rule(n: u32, count_notice_day: bool) -> NoticeRule {
    NoticeRule {
        working_days: n,
        count_notice_day,
    }
}

fn start(notice: &str) -> Result<NaiveDate, CalendarError> {
    shipped()
        .earliest_start(d(notice), &NoticeRule::default())
        .map(|e| e.earliest_start)
}

// ---- the required examples (official 2026 calendar) ----

#[test]
fn example_monday_gives_friday() {
    assert_eq!(start("2026-11-23"), Ok(d("2026-11-27")));
}

#[test]
fn example_friday_gives_thursday() {
    assert_eq!(start("2026-11-27"), Ok(d("2026-12-03")));
}

#[test]
fn example_national_day_with_makeup_saturday() {
    let e = shipped()
        .earliest_start(d("2026-09-30"), &NoticeRule::default())
        .unwrap();
    assert_eq!(e.notified_on, d("2026-09-30"));
    assert_eq!(e.earliest_start, d("2026-10-11"));
    assert_eq!(
        e.working_days_counted,
        vec![d("2026-10-08"), d("2026-10-09"), d("2026-10-10")]
    );
}

#[test]
fn example_spring_festival() {
    let e = shipped()
        .earliest_start(d("2026-02-13"), &NoticeRule::default())
        .unwrap();
    assert_eq!(e.earliest_start, d("2026-02-26"));
    assert_eq!(
        e.working_days_counted,
        vec![d("2026-02-14"), d("2026-02-24"), d("2026-02-25")]
    );
}

#[test]
fn example_start_in_unloaded_year_is_fine() {
    assert!(!shipped().has_year(2027));
    assert_eq!(start("2026-12-28"), Ok(d("2027-01-01")));
}

#[test]
fn example_counting_into_unloaded_year_fails() {
    assert_eq!(
        start("2026-12-29"),
        Err(CalendarError::YearMissing { year: 2027 })
    );
}

// ---- more of earliest_start ----

#[test]
fn count_notice_day_counts_a_working_notice_day_only() {
    let cal = shipped();
    let monday = cal.earliest_start(d("2026-11-23"), &rule(3, true)).unwrap();
    assert_eq!(monday.earliest_start, d("2026-11-26"));
    assert_eq!(
        monday.working_days_counted,
        vec![d("2026-11-23"), d("2026-11-24"), d("2026-11-25")]
    );
    // A Saturday notice is not a working day: same as not counting it.
    let saturday = cal.earliest_start(d("2026-11-28"), &rule(3, true)).unwrap();
    assert_eq!(saturday.earliest_start, d("2026-12-03"));
    // A make-up Saturday is a working day and counts.
    let makeup = cal.earliest_start(d("2026-10-10"), &rule(1, true)).unwrap();
    assert_eq!(makeup.earliest_start, d("2026-10-11"));
    assert_eq!(makeup.working_days_counted, vec![d("2026-10-10")]);
}

#[test]
fn notice_day_needs_no_data_unless_counted() {
    // Only 2026 loaded; a notice on 2025-12-31 counts days of 2026 only.
    let only_2026 = WorkingCalendar::new(vec![shipped().year(2026).unwrap().clone()]).unwrap();
    let e = only_2026
        .earliest_start(d("2025-12-31"), &NoticeRule::default())
        .unwrap();
    // 2026-01-01..03 are days off, Sunday 2026-01-04 is a make-up working day.
    assert_eq!(
        e.working_days_counted,
        vec![d("2026-01-04"), d("2026-01-05"), d("2026-01-06")]
    );
    assert_eq!(e.earliest_start, d("2026-01-07"));
    assert_eq!(
        only_2026.earliest_start(d("2025-12-31"), &rule(3, true)),
        Err(CalendarError::YearMissing { year: 2025 })
    );
}

#[test]
fn longer_rules_and_invalid_rules() {
    let cal = shipped();
    assert_eq!(
        cal.earliest_start(d("2026-09-30"), &rule(1, false))
            .unwrap()
            .earliest_start,
        d("2026-10-09")
    );
    assert_eq!(
        cal.earliest_start(d("2026-02-13"), &rule(10, false))
            .unwrap()
            .earliest_start,
        // 02-14 (make-up Sat), 02-24..27, 02-28 (make-up Sat), 03-02..05
        d("2026-03-06")
    );
    for bad in [0, 31] {
        let err = cal
            .earliest_start(d("2026-02-13"), &rule(bad, false))
            .unwrap_err();
        assert_eq!(err.code(), "calendar_invalid");
        assert_eq!(
            err.to_string(),
            format!(
                "working_days must be within 1..=30, got {bad} / 提前通知工作日数须在 1 至 30 之间"
            )
        );
    }
    assert!(rule(1, false).validate().is_ok());
    assert!(rule(30, true).validate().is_ok());
}

#[test]
fn earliest_start_serialises() {
    let e = shipped()
        .earliest_start(d("2026-11-23"), &NoticeRule::default())
        .unwrap();
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"notified_on":"2026-11-23","earliest_start":"2026-11-27","working_days_counted":["2026-11-24","2026-11-25","2026-11-26"]}"#
    );
}

#[test]
fn notice_rule_from_toml() {
    let r: NoticeRule = toml::from_str("").unwrap();
    assert_eq!(r, rule(3, false));
    let r: NoticeRule = toml::from_str("working_days = 5\ncount_notice_day = true").unwrap();
    assert_eq!(r, rule(5, true));
    let err = toml::from_str::<NoticeRule>("workingdays = 5").unwrap_err();
    assert!(
        err.message().contains("unknown field `workingdays`"),
        "{err}"
    );
}

// ---- days ----

#[test]
fn day_kinds_and_names() {
    let cal = shipped();
    let info = |s: &str| cal.day(d(s)).unwrap();
    assert_eq!(
        info("2026-10-01"),
        DayInfo {
            date: d("2026-10-01"),
            working: false,
            kind: DayKind::Holiday,
            name: Some("国庆节".into())
        }
    );
    assert_eq!(info("2026-10-03").kind, DayKind::Holiday); // a listed Saturday
    assert_eq!(
        info("2026-10-10"),
        DayInfo {
            date: d("2026-10-10"),
            working: true,
            kind: DayKind::MakeupWorkday,
            name: Some("国庆节".into())
        }
    );
    assert_eq!(
        info("2026-10-11"),
        DayInfo {
            date: d("2026-10-11"),
            working: false,
            kind: DayKind::Weekend,
            name: None
        }
    );
    assert_eq!(
        info("2026-10-12"),
        DayInfo {
            date: d("2026-10-12"),
            working: true,
            kind: DayKind::Workday,
            name: None
        }
    );
    assert_eq!(cal.is_working(d("2026-10-10")), Ok(true));
    assert_eq!(cal.is_working(d("2026-10-07")), Ok(false));
    assert_eq!(
        cal.day(d("2003-12-31")),
        Err(CalendarError::YearMissing { year: 2003 })
    );
    assert_eq!(
        cal.is_working(d("2027-01-04")),
        Err(CalendarError::YearMissing { year: 2027 })
    );
}

#[test]
fn day_info_serialises_snake_case() {
    let json = serde_json::to_string(&shipped().day(d("2026-10-10")).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"date":"2026-10-10","working":true,"kind":"makeup_workday","name":"国庆节"}"#
    );
    let kinds: Vec<String> = [
        DayKind::Workday,
        DayKind::Weekend,
        DayKind::Holiday,
        DayKind::MakeupWorkday,
    ]
    .iter()
    .map(|k| serde_json::to_string(k).unwrap())
    .collect();
    assert_eq!(
        kinds,
        [
            r#""workday""#,
            r#""weekend""#,
            r#""holiday""#,
            r#""makeup_workday""#
        ]
    );
}

#[test]
fn days_over_a_range() {
    let cal = shipped();
    let days = cal.days(d("2026-09-30"), d("2026-10-11")).unwrap();
    assert_eq!(days.len(), 12);
    let working: Vec<u32> = days
        .iter()
        .filter(|i| i.working)
        .map(|i| i.date.day())
        .collect();
    assert_eq!(working, vec![30, 8, 9, 10]);
    assert_eq!(cal.days(d("2026-10-01"), d("2026-10-01")).unwrap().len(), 1);
    assert_eq!(
        cal.days(d("2026-10-02"), d("2026-10-01"))
            .unwrap_err()
            .code(),
        "calendar_invalid"
    );
    assert_eq!(
        cal.days(d("2026-12-31"), d("2027-01-01")),
        Err(CalendarError::YearMissing { year: 2027 })
    );
}

#[test]
fn year_missing_display_and_code() {
    let e = CalendarError::YearMissing { year: 2027 };
    assert_eq!(
        e.to_string(),
        "the working-day calendar for 2027 is not loaded / 2027 年工作日历尚未加载"
    );
    assert_eq!(e.code(), "calendar_year_missing");
}

// ---- the shipped files ----

#[test]
fn shipped_calendar_has_every_year_and_every_tsv_row() {
    let cal = shipped();
    assert_eq!(cal.years(), (2004..=2026).collect::<Vec<_>>());
    let (off, makeup) = cal.years().iter().fold((0, 0), |(o, m), y| {
        let yc = cal.year(*y).unwrap();
        (o + yc.days_off.len(), m + yc.makeup_workdays.len())
    });
    // cn-public-holidays-2004-2026.tsv: 621 holiday rows, 150 workday rows.
    assert_eq!((off, makeup), (621, 150));
    for y in cal.years() {
        assert_eq!(
            cal.year(y).unwrap().source,
            format!("国务院办公厅关于{y}年部分节假日安排的通知")
        );
    }
    // Year boundary: make-up days of the next year's New Year arrangement stay in their own year.
    assert_eq!(
        cal.day(d("2006-12-30")).unwrap().kind,
        DayKind::MakeupWorkday
    );
    assert_eq!(
        cal.day(d("2018-12-29")).unwrap().kind,
        DayKind::MakeupWorkday
    );
    assert_eq!(cal.day(d("2022-12-31")).unwrap().kind, DayKind::Holiday);
}

#[test]
fn render_october_2026() {
    let text = shipped().render_month(2026, 10).unwrap();
    let expected = [
        " 2026年10月 / October 2026",
        "Mo  Tu  We  Th  Fr  Sa  Su",
        "             1*  2*  3*  4*",
        " 5*  6*  7*  8   9  10+ 11",
        "12  13  14  15  16  17  18",
        "19  20  21  22  23  24  25",
        "26  27  28  29  30  31",
        "* day off 放假   + make-up working day 调休上班   (plain Sat/Sun: weekend)",
        "10-01..10-07 * 国庆节",
        "10-10 + 调休上班 国庆节",
        "",
    ]
    .join("\n");
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn render_mixed_names_and_quiet_months() {
    let cal = shipped();
    let oct25 = cal.render_month(2025, 10).unwrap();
    assert!(
        oct25.contains("\n10-01..10-08 * 国庆节、中秋节\n"),
        "{oct25}"
    );
    assert!(oct25.contains("\n10-11 + 调休上班 国庆节\n"), "{oct25}");
    let sep25 = cal.render_month(2025, 9).unwrap();
    assert!(sep25.ends_with("09-28 + 调休上班 国庆节\n"), "{sep25}");
    let mar26 = cal.render_month(2026, 3).unwrap();
    assert!(
        mar26.ends_with("(plain Sat/Sun: weekend)\nno days off or make-up working days this month / 本月无放假调休安排\n"),
        "{mar26}"
    );
    assert_eq!(
        cal.render_month(2027, 1),
        Err(CalendarError::YearMissing { year: 2027 })
    );
    assert_eq!(
        cal.render_month(2026, 13).unwrap_err().code(),
        "calendar_invalid"
    );
}

#[test]
fn cli_lines() {
    let args: Vec<String> = [
        "2026-11-23",
        "2026-12-29",
        "2026-13-01",
        "26-11-23",
        "2026-12-28",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (text, ok) = earliest_start_lines(shipped(), &NoticeRule::default(), &args);
    assert!(!ok);
    assert_eq!(
        text,
        "2026-11-23\t2026-11-27\n\
         2026-12-29\terror: the working-day calendar for 2027 is not loaded / 2027 年工作日历尚未加载\n\
         2026-13-01\terror: malformed date \"2026-13-01\", expected YYYY-MM-DD / 日期格式应为 YYYY-MM-DD\n\
         26-11-23\terror: malformed date \"26-11-23\", expected YYYY-MM-DD / 日期格式应为 YYYY-MM-DD\n\
         2026-12-28\t2027-01-01\n"
    );
    let (text, ok) = earliest_start_lines(shipped(), &NoticeRule::default(), &args[..1]);
    assert!(ok);
    assert_eq!(text, "2026-11-23\t2026-11-27\n");
}

#[test]
fn parse_date_is_strict() {
    assert_eq!(
        parse_date("2026-02-28"),
        NaiveDate::from_ymd_opt(2026, 2, 28)
    );
    for bad in [
        "2026-2-28",
        "2026-02-29",
        "+2026-02-2",
        " 2026-02-28",
        "2026/02/28",
        "",
    ] {
        assert_eq!(parse_date(bad), None, "{bad:?}");
    }
}

// ---- building calendars ----

fn year_2027() -> YearCalendar {
    YearCalendar {
        year: 2027,
        source: "test".into(),
        days_off: vec![NamedDay::new(d("2027-01-01"), "元旦")],
        makeup_workdays: vec![],
    }
}

#[test]
fn with_year_adds_and_replaces() {
    let cal = shipped();
    let more = cal.with_year(year_2027()).unwrap();
    assert!(more.has_year(2027) && !cal.has_year(2027));
    // 12-30, 12-31, (01-01 off, 01-02/03 weekend), 01-04.
    assert_eq!(
        more.earliest_start(d("2026-12-29"), &NoticeRule::default())
            .unwrap()
            .earliest_start,
        d("2027-01-05")
    );
    let mut plain_2026 = cal.year(2026).unwrap().clone();
    plain_2026.days_off.retain(|x| x.date.month() != 10);
    plain_2026.makeup_workdays.retain(|x| x.date.month() != 10);
    let replaced = cal.with_year(plain_2026).unwrap();
    assert_eq!(replaced.years(), cal.years());
    assert_eq!(
        replaced
            .earliest_start(d("2026-09-30"), &NoticeRule::default())
            .unwrap()
            .earliest_start,
        d("2026-10-06")
    );
    assert_eq!(
        start("2026-09-30"),
        Ok(d("2026-10-11")),
        "original unchanged"
    );
    let mut bad = year_2027();
    bad.source = " ".into();
    assert_eq!(cal.with_year(bad).unwrap_err().code(), "calendar_invalid");
}

#[test]
fn new_rejects_a_year_twice_and_empty_calendar_knows_nothing() {
    assert_eq!(
        WorkingCalendar::new(vec![year_2027(), year_2027()]).unwrap_err(),
        CalendarError::Invalid {
            reason: "year 2027 is given twice / 2027 年重复".into()
        }
    );
    let empty = WorkingCalendar::default();
    assert!(empty.years().is_empty());
    assert_eq!(
        empty.is_working(d("2026-01-05")),
        Err(CalendarError::YearMissing { year: 2026 })
    );
}

#[test]
fn new_sorts_day_lists() {
    let mut y = year_2027();
    y.days_off = vec![
        NamedDay::new(d("2027-10-02"), "国庆节"),
        NamedDay::new(d("2027-10-01"), "国庆节"),
    ];
    let cal = WorkingCalendar::new(vec![y]).unwrap();
    assert_eq!(cal.day(d("2027-10-02")).unwrap().kind, DayKind::Holiday);
    assert_eq!(cal.day(d("2027-10-01")).unwrap().kind, DayKind::Holiday);
    assert_eq!(cal.year(2027).unwrap().days_off[0].date, d("2027-10-01"));
}

// ---- validation ----

fn invalid(y: &YearCalendar) -> String {
    match y.validate() {
        Err(CalendarError::Invalid { reason }) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn validate_date_outside_year() {
    let mut y = year_2027();
    y.days_off.push(NamedDay::new(d("2026-12-31"), "元旦"));
    assert_eq!(
        invalid(&y),
        "2026-12-31 is not in 2027 / 日期 2026-12-31 不在 2027 年内"
    );
}

#[test]
fn validate_duplicate_across_lists() {
    let mut y = year_2027();
    y.makeup_workdays
        .push(NamedDay::new(d("2027-01-01"), "元旦"));
    assert_eq!(
        invalid(&y),
        "2027-01-01 is listed twice / 日期 2027-01-01 重复"
    );
}

#[test]
fn validate_makeup_on_weekday() {
    let mut y = year_2027();
    y.makeup_workdays
        .push(NamedDay::new(d("2027-02-10"), "春节"));
    assert_eq!(
        invalid(&y),
        "make-up working day 2027-02-10 is a Wed, not a Saturday or Sunday / 调休上班日 2027-02-10 不是周六或周日"
    );
    y.makeup_workdays = vec![NamedDay::new(d("2027-02-07"), "春节")]; // Sunday
    assert_eq!(y.validate(), Ok(()));
}

#[test]
fn validate_year_source_and_names() {
    let mut y = year_2027();
    y.source = String::new();
    assert_eq!(
        invalid(&y),
        "year 2027: source must name the notice the days come from / 缺少通知来源"
    );
    let mut y = year_2027();
    y.days_off[0].name = " ".into();
    assert_eq!(
        invalid(&y),
        "2027-01-01 has an empty name / 日期 2027-01-01 缺少名称"
    );
    for (year, ok) in [(1989, false), (1990, true), (2200, true), (2201, false)] {
        let y = YearCalendar {
            year,
            source: "s".into(),
            days_off: vec![],
            makeup_workdays: vec![],
        };
        assert_eq!(y.validate().is_ok(), ok, "{year}");
    }
}

#[test]
fn year_calendar_json_round_trip() {
    let y = shipped().year(2026).unwrap();
    let json = serde_json::to_string(y).unwrap();
    assert!(
        json.contains(r#"{"date":"2026-10-10","name":"国庆节"}"#),
        "{json}"
    );
    let back: YearCalendar = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, y);
    let err = serde_json::from_str::<YearCalendar>(
        r#"{"year":2026,"source":"s","days_off":[{"date":"2026-1-1","name":"x"}]}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("invalid date \"2026-1-1\""),
        "{err}"
    );
}

// ---- loading files ----

const GOOD: &str = "\
# comment 2027-01-01
year = 2027
source = \"国务院办公厅关于2027年部分节假日安排的通知\"
days_off = [
  { date = 2027-01-01, name = \"元旦\" },
]
makeup_workdays = []
";

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_err(files: &[(&str, &str)]) -> (String, PolicyFileError) {
    let dir = dir_with(files);
    let err = load_dir(dir.path()).unwrap_err();
    let name = err.file.file_name().unwrap().to_string_lossy().into_owned();
    (name, err)
}

#[test]
fn load_good_file_ignoring_other_files() {
    let dir = dir_with(&[("2027.toml", GOOD), ("README.md", "not toml")]);
    std::fs::create_dir(dir.path().join("old.toml")).unwrap();
    assert_eq!(load_dir(dir.path()).unwrap(), vec![year_2027_from_file()]);
}

fn year_2027_from_file() -> YearCalendar {
    YearCalendar {
        source: "国务院办公厅关于2027年部分节假日安排的通知".into(),
        ..year_2027()
    }
}

#[test]
fn load_empty_and_missing_dir() {
    let dir = dir_with(&[]);
    assert_eq!(load_dir(dir.path()).unwrap(), vec![]);
    let missing = dir.path().join("nope");
    let err = load_dir(&missing).unwrap_err();
    assert_eq!(err.file, missing);
    assert_eq!(err.line, None);
    assert!(err.reason.starts_with("cannot read directory: "), "{err}");
}

#[test]
fn load_unknown_field_points_at_its_line() {
    let text = GOOD.replace(
        "makeup_workdays = []",
        "makeup_workdays = []\nholidays = []",
    );
    let (name, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(name, "2027.toml");
    assert_eq!(err.line, Some(8));
    assert!(err.reason.contains("unknown field `holidays`"), "{err}");
    let text = GOOD.replace("name = \"元旦\"", "name = \"元旦\", kind = \"x\"");
    let (_, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(err.line, Some(5));
    assert!(err.reason.contains("unknown field `kind`"), "{err}");
}

#[test]
fn load_parse_error_carries_line() {
    let text = GOOD.replace("2027-01-01, name", "2027-01-01 name");
    let (_, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(err.line, Some(5), "{err}");
    let text = GOOD.replace("2027-01-01, name", "2027-02-30, name");
    let (_, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(err.line, Some(5), "{err}");
    let text = GOOD.replace("2027-01-01, name", "2027-01-01T08:00:00, name");
    let (_, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.reason.contains("without a time"), "{err}");
    let (_, err) = load_err(&[("2027.toml", "year = 2027\nsource = ")]);
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn load_validation_error_points_at_the_date() {
    let text = GOOD.replace(
        "makeup_workdays = []",
        "makeup_workdays = [\n  { date = 2027-01-01, name = \"元旦\" },\n]",
    );
    let (_, err) = load_err(&[("2027.toml", &text)]);
    // First listing on line 5 (the comment on line 1 is skipped), the second on line 8.
    assert_eq!(err.line, Some(8));
    assert_eq!(
        err.reason,
        "2027-01-01 is listed twice / 日期 2027-01-01 重复"
    );
    assert!(
        err.to_string()
            .ends_with("2027.toml:8: 2027-01-01 is listed twice / 日期 2027-01-01 重复"),
        "{err}"
    );
    let text = GOOD.replace(
        "makeup_workdays = []",
        "makeup_workdays = [\n  { date = 2027-03-03, name = \"x\" },\n]",
    );
    let (_, err) = load_err(&[("2027.toml", &text)]);
    assert_eq!(err.line, Some(8));
    let text = GOOD.replace("year = 2027", "year = 1900");
    let (_, err) = load_err(&[("1900.toml", &text)]);
    assert_eq!(err.line, Some(2));
}

#[test]
fn load_bad_file_name() {
    let (name, err) = load_err(&[("2026.toml", GOOD)]);
    assert_eq!(name, "2026.toml");
    assert_eq!(err.line, Some(2));
    assert_eq!(
        err.reason,
        "file name \"2026.toml\" does not match year = 2027: name it 2027.toml / 文件名与年份不符"
    );
    let (_, err) = load_err(&[("cn-2027.toml", GOOD)]);
    assert_eq!(err.line, Some(2));
}

#[test]
fn load_year_twice() {
    let (name, err) = load_err(&[("2027.TOML", GOOD), ("2027.toml", GOOD)]);
    assert_eq!(name, "2027.toml");
    assert_eq!(err.line, Some(2));
    assert!(
        err.reason.starts_with("year 2027 is already loaded from "),
        "{err}"
    );
    assert!(err.reason.ends_with("2027.TOML / 2027 年重复"), "{err}");
}

#[test]
fn policy_file_error_display() {
    assert_eq!(
        PolicyFileError::at("a/b.toml", Some(3), "bad").to_string(),
        "a/b.toml:3: bad"
    );
    assert_eq!(
        PolicyFileError::at("a/b.toml", None, "bad").to_string(),
        "a/b.toml: bad"
    );
}

// ---- properties over the shipped calendar ----

fn first_day() -> NaiveDate {
    d("2004-01-01")
}

fn notice_dates() -> impl Strategy<Value = NaiveDate> {
    let span = (d("2026-12-20") - first_day()).num_days();
    (0..=span).prop_map(|n| first_day() + chrono::Duration::days(n))
}

proptest! {
    #[test]
    fn prop_exactly_n_working_days_pass(notice in notice_dates(), n in 1u32..=30) {
        let cal = shipped();
        let working_between = |from: NaiveDate, to: NaiveDate| -> Vec<NaiveDate> {
            from.iter_days().skip(1).take_while(|x| *x < to).filter(|x| cal.is_working(*x).unwrap()).collect()
        };
        match cal.earliest_start(notice, &rule(n, false)) {
            Ok(e) => {
                prop_assert_eq!(e.notified_on, notice);
                prop_assert_eq!(e.working_days_counted.len(), n as usize);
                let last = *e.working_days_counted.last().unwrap();
                prop_assert_eq!(last.succ_opt().unwrap(), e.earliest_start);
                prop_assert_eq!(working_between(notice, e.earliest_start), e.working_days_counted);
            }
            Err(err) => {
                // Only possible when fewer than n working days are left in 2026 after the notice.
                prop_assert_eq!(err, CalendarError::YearMissing { year: 2027 });
                prop_assert!(working_between(notice, d("2027-01-01")).len() < n as usize);
            }
        }
    }

    #[test]
    fn prop_monotonic(a in notice_dates(), b in notice_dates()) {
        let (early, late) = if a <= b { (a, b) } else { (b, a) };
        let r = NoticeRule::default();
        let e1 = shipped().earliest_start(early, &r).unwrap().earliest_start;
        let e2 = shipped().earliest_start(late, &r).unwrap().earliest_start;
        prop_assert!(e1 <= e2, "{} -> {} but {} -> {}", early, e1, late, e2);
        prop_assert!(e1 > early);
    }

    #[test]
    fn prop_counting_notice_day_never_later(notice in notice_dates(), n in 1u32..=5) {
        let with = shipped().earliest_start(notice, &rule(n, true)).unwrap();
        let without = shipped().earliest_start(notice, &rule(n, false)).unwrap();
        prop_assert!(with.earliest_start <= without.earliest_start);
        let notice_working = shipped().is_working(notice).unwrap();
        prop_assert_eq!(with.earliest_start == without.earliest_start, !notice_working);
    }
}

#[test]
fn working_minutes_count_only_working_hours_of_working_days() {
    use chrono::{NaiveTime, TimeZone};
    let tz = chrono_tz::Asia::Shanghai;
    let t = |s: &str| {
        tz.from_local_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let hours = (
        NaiveTime::from_hms_opt(8, 30, 0).unwrap(),
        NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
    );
    let cal = shipped();
    // Friday 16:30 to Monday 09:30: an hour on Friday, an hour on Monday.
    let m = cal.working_minutes((t("2026-11-27 16:30"), t("2026-11-30 09:30")), tz, hours);
    assert_eq!(m, Ok(120));
    // Across the National Day holiday (1 to 7 October off): half an hour on each side.
    let m = cal.working_minutes((t("2026-09-30 17:00"), t("2026-10-08 09:00")), tz, hours);
    assert_eq!(m, Ok(30 + 30));
    // Backwards or empty: zero.
    let m = cal.working_minutes((t("2026-11-30 09:30"), t("2026-11-27 16:30")), tz, hours);
    assert_eq!(m, Ok(0));
}
