//! The console's pages. Thin: they read the form, call the same domain functions as the API and
//! render a template; refusals are audited like the API's and explained on the page.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::Rng;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::cookies::{self, Kind};
use super::i18n::LANG_COOKIE;
use super::{Lang, Session, Templates, html};
use crate::App;
use crate::changes::{self, Command, Comment, Completion, Reason, Rejection, Review};
use crate::error::Error;
use crate::http::guard::{Refused, audit_refusal};
use crate::http::problem::ApiError;

pub(super) fn render(name: &str, ctx: Value, status: StatusCode) -> Response {
    match Templates::get().and_then(|t| t.render(name, ctx)) {
        Ok(body) => (status, html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "服务器内部错误 / Internal server error",
            )
                .into_response()
        }
    }
}

/// What every page's frame needs: who, the menu they may see, the CSRF token, the language.
pub(super) fn frame(app: &App, s: &Session, title: &str) -> Value {
    json!({
        "title": s.lang.pick(title),
        "lang": s.lang,
        "me": {"username": s.who.username, "display_name": s.who.display_name},
        "can": {
            "calendar": s.may(app, "calendar.read"),
            "file": s.may(app, "change.create"),
            "changes": s.may(app, "change.read"),
            "assets": s.may(app, "asset.read"),
            "vault": s.may(app, "credential.read"),
            "audit": s.may(app, "audit.read"),
            "users": s.may(app, "user.read"),
            "systems": s.may(app, "change.read"),
            "years": true,
            "notifications": s.may(app, "notification.read"),
        },
        "csrf": s.csrf,
        "tasks": s.tasks(),
    })
}

/// A query a console page cannot read (400 `invalid_query`).
pub(super) fn invalid_query(message: String) -> Error {
    Error::BadRequest {
        code: "invalid_query",
        message,
    }
}

/// A category's title in the reader's language (its key when the policies no longer name it).
pub(super) fn category_title(app: &App, lang: Lang, key: &str) -> String {
    app.policies
        .change
        .categories
        .get(key)
        .map_or(key.to_string(), |c| {
            lang.tr(&c.title_zh, &c.title_en).to_string()
        })
}

/// The categories as a filter's options: `{key, title}`.
pub(super) fn category_options(app: &App, lang: Lang) -> Vec<Value> {
    app.policies
        .change
        .categories
        .iter()
        .map(|(k, c)| json!({"key": k, "title": lang.tr(&c.title_zh, &c.title_en)}))
        .collect()
}

pub(super) fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The words a person reads for a domain error (never internals), in their language.
fn message(e: &Error, lang: Lang) -> String {
    let text = match e {
        Error::Internal(err) => {
            tracing::error!(error = %err, "console request failed");
            "服务器内部错误 / Internal server error".into()
        }
        Error::NotFound { .. } => "未找到 / Not found".into(),
        other => other.to_string(),
    };
    lang.pick(&text)
}

pub(super) fn error_page(app: &App, s: Option<&Session>, lang: Lang, e: Error) -> Response {
    let text = message(&e, lang);
    let status = ApiError::from(e).into_response().status();
    let title = "出错了 / Something went wrong";
    let base = match s {
        Some(s) => frame(app, s, title),
        None => json!({"title": lang.pick(title), "lang": lang}),
    };
    render("error.html", with(base, json!({"message": text})), status)
}

pub(super) fn not_permitted(app: &App, s: &Session) -> Response {
    error_page(app, Some(s), s.lang, Error::forbidden(Vec::new()))
}

/// Audits a refused action exactly as the API gate would; the page then explains it.
pub(super) async fn refused(
    app: &App,
    s: &Session,
    operation: &str,
    target: String,
    e: Error,
) -> (StatusCode, String) {
    let text = message(&e, s.lang);
    let resp = ApiError::from(e).into_response();
    let r = Refused {
        principal: Some(&s.who),
        operation,
        target,
        permission: None,
        request_id: None,
    };
    if audit_refusal(app, r, &resp, app.now()).await.is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            s.lang.tr("服务器内部错误", "Internal server error").into(),
        );
    }
    (resp.status(), text)
}

fn new_csrf() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

// ---- login / logout ----

pub async fn login_form(State(app): State<App>, jar: CookieJar) -> Response {
    let lang = Lang::from_cookie(jar.get(LANG_COOKIE).map(|c| c.value()));
    let csrf = cookies::get(&app, &jar, Kind::Csrf)
        .filter(|v| v.len() == 48)
        .unwrap_or_else(new_csrf);
    let page = render(
        "login.html",
        json!({"title": lang.tr("登录", "Sign in"), "csrf": csrf, "lang": lang}),
        StatusCode::OK,
    );
    (jar.add(cookies::make(&app, Kind::Csrf, csrf)), page).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    totp: String,
}

pub async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(f): Form<LoginForm>,
) -> Response {
    let started = tokio::time::Instant::now();
    let trusted = app.settings.trusted_proxy_nets().unwrap_or_default();
    let client = crate::http::client::client_ip(&trusted, peer.ip(), &headers);
    let lang = Lang::from_cookie(jar.get(LANG_COOKIE).map(|c| c.value()));
    let expected = cookies::get(&app, &jar, Kind::Csrf);
    if expected.as_deref() != Some(f.csrf.as_str()) || f.csrf.len() != 48 {
        return super::csrf_refused(lang);
    }
    let password = SecretString::from(f.password);
    let totp = Some(f.totp.trim()).filter(|t| !t.is_empty());
    let device = cookies::get(&app, &jar, Kind::Device);
    let from = crate::auth::From {
        client: Some(client),
        device: device.as_deref(),
    };
    match crate::auth::login(&app, &f.username, &password, totp, from).await {
        Ok(ok) => {
            let csrf = cookies::csrf_of_session(&app, &ok.session_id);
            let device = crate::auth::device::issue(&app, &ok.username, app.now());
            let jar = jar
                .add(cookies::make(&app, Kind::Session, ok.access_token))
                .add(cookies::make(&app, Kind::Csrf, csrf))
                .add(cookies::make(&app, Kind::Device, device));
            let to = if ok.must_change_password {
                "/console/me/account"
            } else if ok.enrolment_required {
                "/console/me/totp"
            } else {
                "/console/start"
            };
            (jar, Redirect::to(to)).into_response()
        }
        Err(e) => {
            let text = message(&e, lang);
            let resp = ApiError::from(e).into_response();
            let r = Refused {
                principal: None,
                operation: "auth.login",
                target: "POST /console/login".into(),
                permission: None,
                request_id: None,
            };
            if let Err(failed) = audit_refusal(&app, r, &resp, app.now()).await {
                return failed;
            }
            if crate::http::guard::is_failed_login(resp.status()) {
                crate::http::guard::pad_failed_login(started).await;
            }
            let mut page = render(
                "login.html",
                json!({"title": lang.tr("登录", "Sign in"), "csrf": f.csrf, "flash": text,
                       "flash_kind": "error", "lang": lang}),
                resp.status(),
            );
            if let Some(v) = resp.headers().get(header::RETRY_AFTER) {
                page.headers_mut().insert(header::RETRY_AFTER, v.clone());
            }
            page
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(app): State<App>,
    s: Session,
    jar: CookieJar,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    if let Err(e) = crate::auth::logout(&app, &s.who).await {
        return error_page(&app, Some(&s), s.lang, e);
    }
    let jar = jar
        .remove(cookies::make(&app, Kind::Session, String::new()))
        .remove(cookies::make(&app, Kind::Csrf, String::new()));
    (jar, Redirect::to("/console/login")).into_response()
}

// ---- calendar ----

#[derive(Deserialize, Default)]
pub struct CalendarQuery {
    /// `month` (default) or `week`.
    view: Option<String>,
    /// A day inside the week or month shown, `YYYY-MM-DD`; default: today (bank time).
    date: Option<String>,
    /// `YYYY-MM`: the month view of that month (kept for old links).
    month: Option<String>,
    system: Option<String>,
    category: Option<String>,
    status: Option<String>,
}

/// The change statuses, in life-cycle order, for the calendar's filter.
const STATUSES: [&str; 7] = [
    "submitted",
    "approved",
    "in_progress",
    "completed",
    "rejected",
    "cancelled",
    "expired",
];

/// `/console?view=…&date=…` with the filters kept.
fn calendar_href(view: &str, date: NaiveDate, q: &CalendarQuery) -> String {
    format!("/console?view={view}&date={date}{}", filter_params(q))
}

/// `&system=…&category=…&status=…` for the filters chosen.
fn filter_params(q: &CalendarQuery) -> String {
    let mut href = String::new();
    for (k, v) in [
        ("system", &q.system),
        ("category", &q.category),
        ("status", &q.status),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            href.push_str(&format!("&{k}={}", urlencoding(v)));
        }
    }
    href
}

fn urlencoding(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn monday_of(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// The month view (whole weeks, Monday first) or the week view of the same calendar: each day's
/// kind, holiday name or make-up working day, the changes overlapping it, filtered.
pub async fn calendar(
    State(app): State<App>,
    s: Session,
    Query(q): Query<CalendarQuery>,
) -> Response {
    if !s.may(&app, "calendar.read") {
        return not_permitted(&app, &s);
    }
    let lang = s.lang;
    let tz = app.policies.change.timezone;
    let today = app.now().with_timezone(&tz).date_naive();
    let week = q.view.as_deref() == Some("week");
    let anchor = q
        .date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .or_else(|| {
            q.month
                .as_deref()
                .and_then(|m| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok())
        })
        .unwrap_or(today);
    let first = anchor.with_day(1).unwrap_or(anchor);
    let (from, to, prev, next, heading) = if week {
        let from = monday_of(anchor);
        let to = from + Duration::days(6);
        let heading = match lang {
            Lang::Zh => format!(
                "{}年{}月{}日 至 {}月{}日",
                from.year(),
                from.month(),
                from.day(),
                to.month(),
                to.day()
            ),
            Lang::En => format!("week of {from} to {to}"),
        };
        (
            from,
            to,
            from - Duration::days(7),
            from + Duration::days(7),
            heading,
        )
    } else {
        let next_month = first
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(first);
        let prev_month = first
            .checked_sub_months(chrono::Months::new(1))
            .unwrap_or(first);
        let last = next_month.pred_opt().unwrap_or(first);
        let to = last + Duration::days(i64::from(6 - last.weekday().num_days_from_monday()));
        let heading = match lang {
            Lang::Zh => format!("{}年{}月", first.year(), first.month()),
            Lang::En => first.format("%B %Y").to_string(),
        };
        (monday_of(first), to, prev_month, next_month, heading)
    };
    let (days, systems) = match tokio::try_join!(changes::agenda::view(&app, from, to), async {
        crate::db::changes::list_systems(&app.db)
            .await
            .map_err(Error::from)
    }) {
        Ok(r) => r,
        Err(e) => return error_page(&app, Some(&s), lang, e),
    };
    let keep = |c: &changes::agenda::CalendarChange| {
        q.system
            .as_deref()
            .is_none_or(|x| x.is_empty() || c.systems.iter().any(|s| s == x))
            && q.category
                .as_deref()
                .is_none_or(|x| x.is_empty() || c.category == x)
            && q.status
                .as_deref()
                .is_none_or(|x| x.is_empty() || c.status == x)
    };
    let hm = |t: chrono::DateTime<Utc>| lang.moment(t, tz);
    let cells: Vec<Value> = days
        .iter()
        .map(|d| {
            let changes: Vec<Value> = d
                .changes
                .iter()
                .filter(|c| keep(c))
                .map(|c| {
                    let mut v = json!(c);
                    v["when"] = json!(format!("{} – {}", hm(c.planned_start), hm(c.planned_end)));
                    v
                })
                .collect();
            let label = match (lang, week) {
                (_, true) => lang.weekday_label(d.date),
                (Lang::Zh, false) => format!("{}月{}日", d.date.month(), d.date.day()),
                (Lang::En, false) => d.date.format("%b %-d").to_string(),
            };
            json!({
                "date": d.date.to_string(),
                "label": label,
                "kind": d.kind,
                "name": d.name,
                "today": d.date == today,
                "other_month": !week && d.date.month() != first.month(),
                "week_href": calendar_href("week", d.date, &q),
                "list_href": format!("/console/changes?from={0}&to={0}{1}", d.date, filter_params(&q)),
                "changes": changes,
            })
        })
        .collect();
    let weeks: Vec<Vec<Value>> = cells.chunks(7).map(<[Value]>::to_vec).collect();
    let categories = category_options(&app, lang);
    let view = if week { "week" } else { "month" };
    let ctx = with(
        frame(&app, &s, "变更日历 / Change calendar"),
        json!({
            "view": view,
            "anchor": anchor.to_string(),
            "heading": heading,
            "prev_href": calendar_href(view, prev, &q),
            "next_href": calendar_href(view, next, &q),
            "switch_href": calendar_href(if week { "month" } else { "week" }, anchor, &q),
            "weeks": weeks,
            "systems": systems,
            "categories": categories,
            "statuses": STATUSES,
            "filters": {"system": q.system, "category": q.category, "status": q.status},
        }),
    );
    render("calendar.html", ctx, StatusCode::OK)
}

// ---- personal calendar feed ----

/// Creates (or rotates) the caller's iCalendar feed and shows its link once, like
/// `POST /api/v1/me/calendar-feed` (calendar.read).
pub async fn feed_create(State(app): State<App>, s: Session, Form(f): Form<CsrfOnly>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "calendar.read") {
        changes::agenda::create_feed(&app, &who)
            .await
            .map(|feed| Some(feed.url))
    } else {
        Err(Error::forbidden(Vec::new()))
    };
    feed_answer(
        &app,
        &s,
        "calendar.feed_create",
        "POST /console/calendar-feed",
        result,
    )
    .await
}

/// Revokes the caller's feed link, like `DELETE /api/v1/me/calendar-feed` (signed in).
pub async fn feed_revoke(State(app): State<App>, s: Session, Form(f): Form<CsrfOnly>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = changes::agenda::revoke_feed(&app, &s.who)
        .await
        .map(|()| None);
    feed_answer(
        &app,
        &s,
        "calendar.feed_revoke",
        "POST /console/calendar-feed/revoke",
        result,
    )
    .await
}

/// The feed page (with the new link, or saying it is revoked), or the audited refusal.
async fn feed_answer(
    app: &App,
    s: &Session,
    operation: &str,
    target: &str,
    result: Result<Option<String>, Error>,
) -> Response {
    match result {
        Ok(url) => render(
            "feed.html",
            with(
                frame(app, s, "订阅我的变更日历 / Subscribe to my change calendar"),
                json!({ "url": url }),
            ),
            StatusCode::OK,
        ),
        Err(e) => {
            let (status, text) = refused(app, s, operation, target.to_string(), e).await;
            render(
                "error.html",
                with(
                    frame(app, s, "请求被拒绝 / Request refused"),
                    json!({"message": text}),
                ),
                status,
            )
        }
    }
}

// ---- language ----

/// Switches the console's language (`cg_lang`, a year) and returns to the page it came from.
pub async fn switch_lang(
    State(app): State<App>,
    Path(lang): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let lang = Lang::from_cookie(Some(lang.as_str()));
    let back = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.split_once("://"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .zip(headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|((host, _), own)| host == own)
        .map(|((_, path), _)| format!("/{path}"))
        .filter(|p| p.starts_with("/console") && !p.starts_with("/console/lang/"))
        .unwrap_or_else(|| "/console".into());
    let c = cookies::make(&app, Kind::Lang, lang.code().into()).to_string();
    ([(header::SET_COOKIE, c)], Redirect::to(&back)).into_response()
}

// ---- one change ----

/// The button, and the text field the API needs for it.
fn action(lang: Lang, step: &str) -> Value {
    let (label, field, field_label, required) = match step {
        "approve" => (
            lang.tr("批准", "Approve"),
            Some("comment"),
            lang.tr("审批意见（可选）", "Comment (optional)"),
            false,
        ),
        "reject" => (
            lang.tr("驳回", "Reject"),
            Some("reason"),
            lang.tr("驳回理由", "Reason"),
            true,
        ),
        "start" => (lang.tr("开始实施", "Start"), None, "", false),
        "complete" => (lang.tr("完成", "Complete"), Some("outcome"), "", true),
        "cancel" => (
            lang.tr("取消变更", "Cancel the change"),
            Some("reason"),
            lang.tr("取消理由", "Reason"),
            true,
        ),
        "review" => (
            lang.tr("事后复核", "Review"),
            Some("notes"),
            lang.tr("复核意见", "Review notes"),
            true,
        ),
        // New window, checked against the original notice; an approved change goes back to
        // submitted (as PATCH /api/v1/changes/{id}).
        "reschedule" => (
            lang.tr("改期（需重新审批）", "Reschedule (approved again)"),
            Some("window"),
            "",
            true,
        ),
        _ => ("", None, "", false),
    };
    json!({"step": step, "label": label, "field": field, "field_label": field_label, "required": required})
}

/// The approval stages as the change page shows them: words, never codes.
fn stage_rows(
    app: &App,
    lang: Lang,
    c: &changes::ChangeView,
    fmt: &dyn Fn(chrono::DateTime<Utc>) -> String,
) -> Vec<Value> {
    let role_title = |r: &String| {
        app.policies
            .roles
            .get(r)
            .map_or(r.clone(), |x| lang.tr(&x.title_zh, &x.title_en).to_string())
    };
    let decision = |d: &changes::approval::DecisionView| {
        json!({"by": d.by.display_name, "at": fmt(d.at), "comment": d.comment,
               "on_behalf_of": d.on_behalf_of.as_ref().map(|u| u.display_name.clone())})
    };
    c.approval
        .stages
        .iter()
        .map(|st| {
            let (state, state_label) = match st.state {
                changes::approval::StageState::Approved => ("approved", lang.tr("已通过", "approved")),
                changes::approval::StageState::Current => ("current", lang.tr("待审批", "awaiting approval")),
                changes::approval::StageState::Waiting => ("waiting", lang.tr("未开始", "not yet")),
                changes::approval::StageState::Rejected => ("rejected", lang.tr("已驳回", "rejected")),
            };
            json!({
                "title": lang.pick(&st.title),
                "roles": st.roles.iter().map(role_title).collect::<Vec<_>>().join(lang.tr("或", " or ")),
                "department": st.department,
                "needed": st.needed,
                "missing": (st.needed as usize).saturating_sub(st.approvals.len()),
                "approvals": st.approvals.iter().map(decision).collect::<Vec<_>>(),
                "rejection": st.rejection.as_ref().map(decision),
                "state": state,
                "state_label": state_label,
            })
        })
        .collect()
}

async fn change_page(
    app: &App,
    s: &Session,
    id: i64,
    flash: Option<(StatusCode, String)>,
) -> Response {
    if !s.may(app, "change.read") {
        return not_permitted(app, s);
    }
    let lang = s.lang;
    let c = match changes::get(app, id).await {
        Ok(c) => c,
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    // The timeline the API shows, and the e-mails only for those who may read the outbox.
    let events = match crate::db::changes::events(&app.db, id).await {
        Ok(e) => e,
        Err(e) => return error_page(app, Some(s), lang, e.into()),
    };
    let notices = if s.may(app, "notification.read") {
        match crate::notify::list(app, Some(id), None).await {
            Ok(n) => Some(n),
            Err(e) => return error_page(app, Some(s), lang, e),
        }
    } else {
        None
    };
    let tz = app.policies.change.timezone;
    let fmt = |t: chrono::DateTime<Utc>| lang.moment(t, tz);
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"at": fmt(e.at), "from_status": e.from_status, "to_status": e.to_status,
                   "actor": e.actor, "comment": e.comment})
        })
        .collect();
    let notices: Option<Vec<Value>> = notices.map(|ns| {
        ns.iter()
            .map(|n| {
                json!({"kind": n.kind, "recipients": n.recipients, "status": n.status,
                       "sent_at": n.sent_at.map(fmt)})
            })
            .collect()
    });
    let actions: Vec<Value> = match changes::steps_allowed(app, &s.who, &c).await {
        Ok(steps) => steps.into_iter().map(|step| action(lang, step)).collect(),
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    let stages = stage_rows(app, lang, &c, &fmt);
    let category = category_title(app, lang, &c.category);
    let (status, flash, kind) = match flash {
        Some((status, text)) => (status, Some(text), "error"),
        None => (StatusCode::OK, None, ""),
    };
    let ctx = with(
        frame(app, s, &format!("#{} {}", c.id, c.title)),
        json!({
            "c": c,
            "category": category,
            "start": fmt(c.planned_start),
            "end": fmt(c.planned_end),
            "start_input": c.planned_start.with_timezone(&tz).format("%Y-%m-%dT%H:%M").to_string(),
            "end_input": c.planned_end.with_timezone(&tz).format("%Y-%m-%dT%H:%M").to_string(),
            "notified_on": lang.day(c.notified_on),
            "earliest_start": c.earliest_start.map(|d| lang.day(d)),
            "actions": actions,
            "stages": stages,
            "events": events,
            "notices": notices,
            "flash": flash,
            "flash_kind": kind,
        }),
    );
    render("change.html", ctx, status)
}

pub async fn change(State(app): State<App>, s: Session, Path(id): Path<i64>) -> Response {
    change_page(&app, &s, id, None).await
}

#[derive(Deserialize)]
pub struct StepForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    outcome: Option<String>,
    /// `reschedule`: the new window, `datetime-local` in bank time.
    #[serde(default)]
    planned_start: String,
    #[serde(default)]
    planned_end: String,
}

pub async fn change_step(
    State(app): State<App>,
    s: Session,
    Path((id, step)): Path<(i64, String)>,
    Form(f): Form<StepForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let text = f.text.trim().to_string();
    let result = match step.as_str() {
        "review" => changes::review(&app, &s.who, id, Review { notes: text }).await,
        "reschedule" => {
            let window = local_time(&app, "planned_start", &f.planned_start)
                .and_then(|start| Ok((start, local_time(&app, "planned_end", &f.planned_end)?)));
            match window {
                Ok((start, end)) => {
                    let req = changes::AmendChange {
                        planned_start: Some(start),
                        planned_end: Some(end),
                        ..Default::default()
                    };
                    changes::amend(&app, &s.who, id, req).await
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            let cmd = match step.as_str() {
                "approve" => Command::Approve(Comment {
                    comment: Some(text).filter(|t| !t.is_empty()),
                    on_behalf_of: None,
                }),
                "reject" => Command::Reject(Rejection {
                    reason: text,
                    on_behalf_of: None,
                }),
                "start" => Command::Start,
                "cancel" => Command::Cancel(Reason { reason: text }),
                "complete" => {
                    let outcome = serde_json::from_value(json!(f.outcome.unwrap_or_default()));
                    match outcome {
                        Ok(outcome) => Command::Complete(Completion {
                            outcome,
                            notes: text,
                        }),
                        Err(_) => {
                            let e = Error::invalid(
                                "invalid_body",
                                "结果须为 succeeded、failed 或 rolled_back / outcome must be succeeded, failed or rolled_back",
                            );
                            let flash = refused(
                                &app,
                                &s,
                                "change.complete",
                                format!("POST /console/changes/{id}/complete"),
                                e,
                            )
                            .await;
                            return change_page(&app, &s, id, Some(flash)).await;
                        }
                    }
                }
                _ => {
                    return error_page(&app, Some(&s), s.lang, Error::NotFound { what: "step" });
                }
            };
            changes::transition(&app, &s.who, id, cmd).await
        }
    };
    match result {
        Ok(_) => Redirect::to(&format!("/console/changes/{id}")).into_response(),
        Err(e) => {
            let operation = format!("change.{step}");
            let flash = refused(
                &app,
                &s,
                &operation,
                format!("POST /console/changes/{id}/{step}"),
                e,
            )
            .await;
            change_page(&app, &s, id, Some(flash)).await
        }
    }
}

// ---- times ----

/// A `datetime-local` value, taken in the bank's time zone.
pub(super) fn local_time(
    app: &App,
    field: &'static str,
    v: &str,
) -> Result<chrono::DateTime<chrono::FixedOffset>, Error> {
    let tz = app.policies.change.timezone;
    NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
        .ok()
        .and_then(|t| tz.from_local_datetime(&t).earliest())
        .map(|t| t.fixed_offset())
        .ok_or_else(|| {
            Error::invalid(
                "invalid_body",
                format!("{field} 须为日期时间 / {field} must be a date and time"),
            )
        })
}

// ---- audit ----

#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    #[serde(default)]
    q: String,
}

pub async fn audit(State(app): State<App>, s: Session, Query(q): Query<AuditQuery>) -> Response {
    if !s.may(&app, "audit.read") {
        return not_permitted(&app, &s);
    }
    let tz = app.policies.change.timezone;
    let (entries, verification) = match tokio::try_join!(
        crate::db::audit::list(&app.db, 100, q.before),
        app.verify_audit()
    ) {
        Ok(r) => r,
        Err(e) => return error_page(&app, Some(&s), s.lang, e.into()),
    };
    let older = entries.last().map(|e| e.seq).filter(|seq| *seq > 1);
    let needle = q.q.trim().to_lowercase();
    let rows: Vec<Value> = entries
        .iter()
        .filter(|e| {
            needle.is_empty()
                || [
                    Some(&e.action),
                    e.actor.as_ref(),
                    e.target.as_ref(),
                    e.code.as_ref(),
                    e.reason.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|v| v.to_lowercase().contains(&needle))
        })
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": s.lang.moment_secs(e.at, tz),
                "actor": e.actor, "action": e.action, "target": e.target,
                "outcome": e.outcome, "code": e.code, "reason": e.reason,
            })
        })
        .collect();
    let ctx = with(
        frame(&app, &s, "审计轨迹 / Audit trail"),
        json!({"entries": rows, "verification": verification, "older": older, "q": q.q}),
    );
    render("audit.html", ctx, StatusCode::OK)
}

// ---- static assets, compiled in ----

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (
            include_str!("../../../static/console/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("../../../static/console/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
