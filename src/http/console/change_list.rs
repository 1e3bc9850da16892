//! 变更列表 / The change list: every change, filtered, sorted and paged, and the same filtered
//! list exported as CSV (UTF-8 with a BOM, so Excel reads Chinese) or as an XLSX workbook.
//! The filter is the API's (`GET /api/v1/changes`), read from a GET form.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pages::{
    category_options, category_title, error_page, frame, invalid_query, not_permitted, render, with,
};
use super::table::{Download, Table};
use super::{Lang, Session};
use crate::App;
use crate::changes::rules::{Status, start_of_day};
use crate::changes::{self, ChangeView, words};
use crate::db::changes::{ChangeFilter, ChangeOrder};
use crate::error::Error;
use crate::text::{self, Lines};

/// Rows on one page of the list.
const PAGE: i64 = 50;
/// The most rows one export holds.
const EXPORT_MAX: i64 = 5000;

/// The list's form, as the browser sends it (an empty field means "any").
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListForm {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    category: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    system: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    requester: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    assignee: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    risk: String,
    /// `yes`, `no` or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    emergency: String,
    /// First day of the period (bank date): windows ending after its start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    /// Last day of the period (bank date): windows starting before its end.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    /// Words in the title or the description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sort: String,
    /// `1`: only the changes I filed (我的变更).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mine: String,
    #[serde(default, skip_serializing)]
    page: Option<u32>,
}

fn given(v: &str) -> Option<&str> {
    Some(v.trim()).filter(|v| !v.is_empty())
}

fn date(field: &str, v: &str) -> Result<Option<NaiveDate>, Error> {
    given(v)
        .map(|d| {
            crate::calendar::parse_date(d).ok_or_else(|| {
                invalid_query(format!(
                    "{field} 须为日期 YYYY-MM-DD / {field} must be a date YYYY-MM-DD"
                ))
            })
        })
        .transpose()
}

impl ListForm {
    /// The filter this form asks for, or why it cannot be read.
    fn filter<'a>(&'a self, app: &App, s: &'a Session) -> Result<ChangeFilter<'a>, Error> {
        for (field, v) in [
            ("category", &self.category),
            ("system", &self.system),
            ("requester", &self.requester),
            ("assignee", &self.assignee),
            ("q", &self.q),
        ] {
            text::optional(field, Some(v), 200, Lines::One)?;
        }
        let status = given(&self.status);
        if let Some(x) = status
            && Status::parse(x).is_none()
        {
            return Err(invalid_query(format!("未知状态 / unknown status {x}")));
        }
        let risk = given(&self.risk);
        if let Some(x) = risk
            && !["low", "medium", "high"].contains(&x)
        {
            return Err(invalid_query(format!("未知风险等级 / unknown risk {x}")));
        }
        let emergency = match given(&self.emergency) {
            None => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(_) => {
                return Err(invalid_query(
                    "emergency 须为 yes 或 no / emergency must be yes or no".into(),
                ));
            }
        };
        let sort = match given(&self.sort) {
            None | Some("start") => ChangeOrder::Start,
            Some("start_desc") => ChangeOrder::StartDesc,
            Some("filed") => ChangeOrder::Filed,
            Some("updated") => ChangeOrder::Updated,
            Some(x) => return Err(invalid_query(format!("未知排序 / unknown order {x}"))),
        };
        let tz = app.policies.change.timezone;
        let out_of_range = || invalid_query("日期超出范围 / date out of range".into());
        let from = match date("from", &self.from)? {
            Some(d) => Some(start_of_day(d, tz).ok_or_else(out_of_range)?),
            None => None,
        };
        let to = match date("to", &self.to)? {
            Some(d) => Some(
                d.succ_opt()
                    .and_then(|next| start_of_day(next, tz))
                    .ok_or_else(out_of_range)?,
            ),
            None => None,
        };
        let page = i64::from(self.page.unwrap_or(1).max(1));
        Ok(ChangeFilter {
            status,
            category: given(&self.category),
            system: given(&self.system),
            requester: if self.mine == "1" {
                Some(s.who.username.as_str())
            } else {
                given(&self.requester)
            },
            assignee: given(&self.assignee),
            risk,
            emergency,
            text: given(&self.q),
            from,
            to,
            start_after: None,
            sort,
            // One more than a page, to know whether there is a next one.
            limit: PAGE + 1,
            offset: (page - 1) * PAGE,
        })
    }

    /// The query string of this form on another page (or with no page: for the exports).
    fn href(&self, path: &str, page: Option<u32>) -> String {
        let mut q = serde_urlencoded::to_string(self).unwrap_or_default();
        if let Some(p) = page {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&format!("page={p}"));
        }
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }
}

/// A change as one row of the list and of the exports: words in the reader's language.
struct Line {
    id: i64,
    title: String,
    category: String,
    action: String,
    systems: String,
    risk: String,
    status_code: String,
    status: String,
    emergency: bool,
    requester: String,
    assignee: String,
    start: String,
    end: String,
    notified_on: String,
    outcome: String,
}

fn line(app: &App, lang: Lang, c: &ChangeView) -> Line {
    let tz = app.policies.change.timezone;
    let pick = |(zh, en): (&str, &str)| lang.tr(zh, en).to_string();
    Line {
        id: c.id,
        title: c.title.clone(),
        category: category_title(app, lang, &c.category),
        action: c
            .action
            .as_deref()
            .map(|a| pick(words::action(a)))
            .unwrap_or_default(),
        systems: c.systems.join(", "),
        risk: pick(words::risk(&c.risk)),
        status_code: c.status.clone(),
        status: pick(words::status(&c.status)),
        emergency: c.emergency,
        requester: c.requester.display_name.clone(),
        assignee: c.assignee.display_name.clone(),
        start: lang.moment(c.planned_start, tz),
        end: lang.moment(c.planned_end, tz),
        notified_on: lang.day(c.notified_on),
        outcome: c
            .outcome
            .as_deref()
            .map(|o| pick(words::outcome(o)))
            .unwrap_or_default(),
    }
}

/// The export's table: one header row, one row per change.
fn table(lang: Lang, lines: &[Line]) -> Table {
    let yes = lang.tr("是", "yes");
    let no = lang.tr("否", "no");
    Table {
        sheet: lang.tr("变更", "Changes").to_string(),
        header: [
            ("编号", "ID"),
            ("标题", "Title"),
            ("类别", "Category"),
            ("操作", "Action"),
            ("系统", "Systems"),
            ("风险", "Risk"),
            ("状态", "Status"),
            ("紧急变更", "Emergency"),
            ("申请人", "Requester"),
            ("实施人", "Assignee"),
            ("计划开始", "Planned start"),
            ("计划结束", "Planned end"),
            ("通知日期", "Notified on"),
            ("结果", "Outcome"),
        ]
        .iter()
        .map(|(zh, en)| lang.tr(zh, en).to_string())
        .collect(),
        rows: lines
            .iter()
            .map(|l| {
                vec![
                    l.id.to_string(),
                    l.title.clone(),
                    l.category.clone(),
                    l.action.clone(),
                    l.systems.clone(),
                    l.risk.clone(),
                    l.status.clone(),
                    if l.emergency { yes } else { no }.to_string(),
                    l.requester.clone(),
                    l.assignee.clone(),
                    l.start.clone(),
                    l.end.clone(),
                    l.notified_on.clone(),
                    l.outcome.clone(),
                ]
            })
            .collect(),
    }
}

/// `/console/changes`: the list with its filters.
pub async fn list(State(app): State<App>, s: Session, Query(f): Query<ListForm>) -> Response {
    if !s.may(&app, "change.read") {
        return not_permitted(&app, &s);
    }
    let lang = s.lang;
    let found = match f.filter(&app, &s) {
        Ok(filter) => changes::list(&app, &filter).await,
        Err(e) => Err(e),
    };
    let mut found = match found {
        Ok(found) => found,
        Err(e) => return error_page(&app, Some(&s), lang, e),
    };
    let more = found.len() as i64 > PAGE;
    found.truncate(PAGE as usize);
    let page = f.page.unwrap_or(1).max(1);
    let rows: Vec<Value> = found
        .iter()
        .map(|c| {
            let l = line(&app, lang, c);
            json!({
                "id": l.id, "title": l.title, "category": l.category, "systems": l.systems,
                "risk": l.risk, "status": l.status, "status_code": l.status_code,
                "emergency": l.emergency, "requester": l.requester, "assignee": l.assignee,
                "window": format!("{} – {}", l.start, l.end), "outcome": l.outcome,
            })
        })
        .collect();
    let systems = match crate::db::changes::list_systems(&app.db).await {
        Ok(x) => x,
        Err(e) => return error_page(&app, Some(&s), lang, e.into()),
    };
    let categories = category_options(&app, lang);
    let word_list = |codes: &[&str], of: fn(&str) -> (&str, &str)| -> Vec<Value> {
        codes
            .iter()
            .map(|c| {
                let (zh, en) = of(c);
                json!({"key": c, "title": lang.tr(zh, en)})
            })
            .collect()
    };
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    let title = if f.mine == "1" {
        "我的变更 / My changes"
    } else {
        "变更列表 / Changes"
    };
    let ctx = with(
        frame(&app, &s, title),
        json!({
            "rows": rows,
            "f": f,
            "page": page,
            "prev_href": (page > 1).then(|| f.href("/console/changes", Some(page - 1))),
            "next_href": more.then(|| f.href("/console/changes", Some(page + 1))),
            "csv_href": f.href("/console/changes.csv", None),
            "xlsx_href": f.href("/console/changes.xlsx", None),
            "systems": systems,
            "categories": categories,
            "statuses": word_list(&statuses, words::status),
            "risks": word_list(&["low", "medium", "high"], words::risk),
        }),
    );
    render("changes.html", ctx, StatusCode::OK)
}

/// The filtered list (up to [`EXPORT_MAX`] rows, no paging) as the table of an export.
async fn export_table(
    app: &App,
    s: &Session,
    f: &ListForm,
    form: Download,
) -> Result<Table, Error> {
    let mut filter = f.filter(app, s)?;
    filter.limit = EXPORT_MAX;
    filter.offset = 0;
    let found = changes::export(app, &s.who, &filter, form.extension()).await?;
    let lines: Vec<Line> = found.iter().map(|c| line(app, s.lang, c)).collect();
    Ok(table(s.lang, &lines))
}

fn stamp(app: &App) -> String {
    app.now()
        .with_timezone(&app.policies.change.timezone)
        .format("%Y%m%d-%H%M")
        .to_string()
}

async fn export(app: &App, s: &Session, f: &ListForm, form: Download) -> Response {
    if !s.may(app, "change.read") {
        return not_permitted(app, s);
    }
    let stem = format!("changes-{}", stamp(app));
    match export_table(app, s, f, form)
        .await
        .and_then(|t| t.download(form, &stem))
    {
        Ok(resp) => resp,
        Err(e) => error_page(app, Some(s), s.lang, e),
    }
}

/// `/console/changes.csv`: the filtered list as CSV, UTF-8 with a BOM.
pub async fn csv(State(app): State<App>, s: Session, Query(f): Query<ListForm>) -> Response {
    export(&app, &s, &f, Download::Csv).await
}

/// `/console/changes.xlsx`: the filtered list as an Excel workbook.
pub async fn xlsx(State(app): State<App>, s: Session, Query(f): Query<ListForm>) -> Response {
    export(&app, &s, &f, Download::Xlsx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_keep_the_filters_and_drop_empty_fields() {
        let f = ListForm {
            status: "approved".into(),
            q: "核心 系统&x".into(),
            page: Some(3),
            ..ListForm::default()
        };
        assert_eq!(
            f.href("/console/changes", Some(4)),
            "/console/changes?status=approved&q=%E6%A0%B8%E5%BF%83+%E7%B3%BB%E7%BB%9F%26x&page=4"
        );
        assert_eq!(
            ListForm::default().href("/console/changes.csv", None),
            "/console/changes.csv"
        );
    }
}
