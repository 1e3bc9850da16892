//! 变更报表 / Reports for management and compliance: for a period, the figures of
//! `GET /api/v1/reports/changes` as a table, the weekly figures as SVG charts and as CSV, and
//! the printable monthly change schedule for the management meeting (A4 landscape).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Datelike, Duration, NaiveDate};
use serde::Deserialize;
use serde_json::{Value, json};

use super::charts::{self, Series, Shape};
use super::pages::{category_title, error_page, frame, invalid_query, not_permitted, render, with};
use super::table::{Download, Table};
use super::{Lang, Session};
use crate::App;
use crate::changes::report::{self, ChangeReport, Week};
use crate::changes::{self, words};
use crate::db::changes::ChangeFilter;
use crate::error::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl Period {
    /// The chosen period; by default the twelve weeks up to today (bank time).
    fn dates(&self, app: &App) -> Result<(NaiveDate, NaiveDate), Error> {
        let today = app
            .now()
            .with_timezone(&app.policies.change.timezone)
            .date_naive();
        let parse = |field: &str, v: &str| {
            crate::calendar::parse_date(v.trim()).ok_or_else(|| {
                invalid_query(format!(
                    "{field} 须为日期 YYYY-MM-DD / {field} must be a date YYYY-MM-DD"
                ))
            })
        };
        let to = if self.to.trim().is_empty() {
            today
        } else {
            parse("to", &self.to)?
        };
        let from = if self.from.trim().is_empty() {
            let monday = to - Duration::days(i64::from(to.weekday().num_days_from_monday()));
            monday - Duration::weeks(11)
        } else {
            parse("from", &self.from)?
        };
        Ok((from, to))
    }
}

fn week_label(w: &Week) -> String {
    format!("{}/{:02}", w.monday.month(), w.monday.day())
}

fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The report's figures as rows of (what, how many), in the reader's language.
fn figures(app: &App, lang: Lang, r: &ChangeReport) -> Vec<Value> {
    let mut rows =
        vec![json!({"what": lang.tr("变更总数", "Changes"), "n": r.total, "key": "total"})];
    for (k, n) in &r.by_category {
        rows.push(json!({"what": format!("{}：{}", lang.tr("类别", "Category"), category_title(app, lang, k)), "n": n, "key": format!("category.{k}")}));
    }
    for (k, n) in &r.by_status {
        let (zh, en) = words::status(k);
        rows.push(json!({"what": format!("{}：{}", lang.tr("状态", "Status"), lang.tr(zh, en)), "n": n, "key": format!("status.{k}")}));
    }
    for (k, n) in &r.by_outcome {
        let (zh, en) = words::outcome(k);
        rows.push(json!({"what": format!("{}：{}", lang.tr("结果", "Outcome"), lang.tr(zh, en)), "n": n, "key": format!("outcome.{k}")}));
    }
    rows.push(
        json!({"what": lang.tr("紧急变更", "Emergency changes"), "n": r.emergency,
                     "share": percent(r.emergency, r.total), "key": "emergency"}),
    );
    rows.push(
        json!({"what": lang.tr("因通知期不足被拒的提交", "Filings refused for late notice"),
                     "n": r.refused_insufficient_notice, "key": "refused_insufficient_notice"}),
    );
    rows.push(
        json!({"what": lang.tr("违规变更（未经批准）", "Unauthorized changes"),
                     "n": r.unauthorized_changes, "key": "unauthorized_changes"}),
    );
    rows
}

fn charts_of(
    app: &App,
    lang: Lang,
    r: &ChangeReport,
    weeks: &[Week],
) -> Result<Vec<String>, Error> {
    let labels: Vec<String> = weeks.iter().map(week_label).collect();
    let by_category: Vec<Series> = r
        .by_category
        .keys()
        .map(|k| Series {
            name: category_title(app, lang, k),
            values: weeks
                .iter()
                .map(|w| w.by_category.get(k).copied().unwrap_or(0))
                .collect(),
        })
        .collect();
    let outcomes: Vec<String> = ["succeeded", "failed", "rolled_back"]
        .iter()
        .map(|o| {
            let (zh, en) = words::outcome(o);
            lang.tr(zh, en).to_string()
        })
        .collect();
    let outcome_counts = Series {
        name: lang.tr("已完成的变更", "Completed changes").into(),
        values: ["succeeded", "failed", "rolled_back"]
            .iter()
            .map(|o| r.by_outcome.get(*o).copied().unwrap_or(0))
            .collect(),
    };
    let watch = |name: (&str, &str), f: fn(&Week) -> i64| Series {
        name: lang.tr(name.0, name.1).into(),
        values: weeks.iter().map(f).collect(),
    };
    Ok(vec![
        charts::draw(
            lang.tr("每周变更数（按类别）", "Changes per week, by category"),
            &labels,
            &by_category,
            Shape::Stacked,
        )?,
        charts::draw(
            &format!(
                "{}（{}）",
                lang.tr("实施结果", "Outcomes"),
                match r.success_rate {
                    Some(x) => format!("{} {:.1}%", lang.tr("成功率", "success rate"), x * 100.0),
                    None => lang.tr("暂无完成的变更", "none completed yet").into(),
                }
            ),
            &outcomes,
            &[outcome_counts],
            Shape::Stacked,
        )?,
        charts::draw(
            lang.tr(
                "每周紧急变更、通知不足被拒与违规变更",
                "Emergencies, late-notice refusals and unauthorized changes per week",
            ),
            &labels,
            &[
                watch(("紧急变更", "Emergencies"), |w| w.emergency),
                watch(("通知不足被拒", "Refused for late notice"), |w| {
                    w.refused_insufficient_notice
                }),
                watch(("违规变更", "Unauthorized"), |w| w.unauthorized_changes),
            ],
            Shape::Lines,
        )?,
    ])
}

/// `/console/reports?from=&to=`.
pub async fn show(State(app): State<App>, s: Session, Query(p): Query<Period>) -> Response {
    if !s.may(&app, "change.read") {
        return not_permitted(&app, &s);
    }
    let lang = s.lang;
    let got = async {
        let (from, to) = p.dates(&app)?;
        let (r, weeks) = tokio::try_join!(
            report::changes(&app, from, to),
            report::weekly(&app, from, to)
        )?;
        let charts = charts_of(&app, lang, &r, &weeks)?;
        Ok::<_, Error>((from, to, r, weeks, charts))
    }
    .await;
    let (from, to, r, weeks, charts) = match got {
        Ok(x) => x,
        Err(e) => return error_page(&app, Some(&s), lang, e),
    };
    let weekly: Vec<Value> = weeks
        .iter()
        .map(|w| {
            json!({"week": lang.day(w.monday), "total": w.by_category.values().sum::<i64>(),
                   "emergency": w.emergency, "completed": w.completed,
                   "success": percent(w.succeeded, w.completed),
                   "refused": w.refused_insufficient_notice, "unauthorized": w.unauthorized_changes})
        })
        .collect();
    let ctx = with(
        frame(&app, &s, "变更报表 / Reports"),
        json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "period": format!("{} – {}", lang.day(from), lang.day(to)),
            "figures": figures(&app, lang, &r),
            "success_rate": r.success_rate.map(|x| format!("{:.1}%", x * 100.0)),
            "charts": charts,
            "weekly": weekly,
            "csv_href": format!("/console/reports.csv?from={from}&to={to}"),
            "schedule_href": format!("/console/reports/schedule?month={}", to.format("%Y-%m")),
        }),
    );
    render("reports.html", ctx, StatusCode::OK)
}

/// `/console/reports.csv?from=&to=`: the weekly figures.
pub async fn csv(State(app): State<App>, s: Session, Query(p): Query<Period>) -> Response {
    if !s.may(&app, "change.read") {
        return not_permitted(&app, &s);
    }
    let lang = s.lang;
    let got = async {
        let (from, to) = p.dates(&app)?;
        let weeks = report::weekly(&app, from, to).await?;
        let categories: Vec<&String> = app.policies.change.categories.keys().collect();
        let mut header = vec![lang.tr("周（周一）", "Week (Monday)").to_string()];
        header.extend(categories.iter().map(|k| category_title(&app, lang, k)));
        for (zh, en) in [
            ("紧急变更", "Emergencies"),
            ("已完成", "Completed"),
            ("成功", "Succeeded"),
            ("通知不足被拒", "Refused for late notice"),
            ("违规变更", "Unauthorized"),
        ] {
            header.push(lang.tr(zh, en).to_string());
        }
        let rows = weeks
            .iter()
            .map(|w| {
                let mut row = vec![w.monday.to_string()];
                row.extend(
                    categories
                        .iter()
                        .map(|k| w.by_category.get(*k).copied().unwrap_or(0).to_string()),
                );
                for n in [
                    w.emergency,
                    w.completed,
                    w.succeeded,
                    w.refused_insufficient_notice,
                    w.unauthorized_changes,
                ] {
                    row.push(n.to_string());
                }
                row
            })
            .collect();
        let t = Table {
            sheet: lang.tr("每周", "Weekly").into(),
            header,
            rows,
        };
        t.download(Download::Csv, &format!("report-{from}-{to}"))
    }
    .await;
    match got {
        Ok(resp) => resp,
        Err(e) => error_page(&app, Some(&s), lang, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    /// `YYYY-MM`; default this month.
    #[serde(default)]
    month: String,
}

/// `/console/reports/schedule?month=YYYY-MM`: the month's changes in start order, to print on
/// A4 landscape for the management meeting.
pub async fn schedule(State(app): State<App>, s: Session, Query(q): Query<MonthQuery>) -> Response {
    if !s.may(&app, "change.read") {
        return not_permitted(&app, &s);
    }
    let lang = s.lang;
    let tz = app.policies.change.timezone;
    let got = async {
        let first = if q.month.trim().is_empty() {
            app.now().with_timezone(&tz).date_naive().with_day(1)
        } else {
            crate::calendar::parse_date(&format!("{}-01", q.month.trim()))
        }
        .ok_or_else(|| invalid_query("month 须为 YYYY-MM / month must be YYYY-MM".into()))?;
        let next = first
            .checked_add_months(chrono::Months::new(1))
            .ok_or_else(|| invalid_query("month 超出范围 / month out of range".into()))?;
        let start = changes::rules::start_of_day(first, tz);
        let end = changes::rules::start_of_day(next, tz);
        let filter = ChangeFilter {
            start_after: start,
            to: end,
            limit: 1000,
            ..Default::default()
        };
        Ok::<_, Error>((first, changes::list(&app, &filter).await?))
    }
    .await;
    let (first, found) = match got {
        Ok(x) => x,
        Err(e) => return error_page(&app, Some(&s), lang, e),
    };
    let rows: Vec<Value> = found
        .iter()
        .map(|c| {
            let pick = |(zh, en): (&str, &str)| lang.tr(zh, en).to_string();
            json!({"id": c.id, "title": c.title, "category": category_title(&app, lang, &c.category),
                   "systems": c.systems.join("、"), "risk": pick(words::risk(&c.risk)),
                   "status": pick(words::status(&c.status)), "emergency": c.emergency,
                   "start": lang.moment(c.planned_start, tz), "end": lang.moment(c.planned_end, tz),
                   "requester": c.requester.display_name, "assignee": c.assignee.display_name,
                   "notified_on": lang.day(c.notified_on)})
        })
        .collect();
    let heading = match lang {
        Lang::Zh => format!("{}年{}月变更计划表", first.year(), first.month()),
        Lang::En => format!("Change schedule, {}", first.format("%B %Y")),
    };
    let ctx = with(
        frame(&app, &s, "月度变更计划 / Monthly change schedule"),
        json!({
            "heading": heading,
            "rows": rows,
            "printed": lang.moment(app.now(), tz),
            "prev_href": first.checked_sub_months(chrono::Months::new(1)).map(|m| format!("/console/reports/schedule?month={}", m.format("%Y-%m"))),
            "next_href": first.checked_add_months(chrono::Months::new(1)).map(|m| format!("/console/reports/schedule?month={}", m.format("%Y-%m"))),
        }),
    );
    render("schedule.html", ctx, StatusCode::OK)
}
