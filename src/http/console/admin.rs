//! The console's admin pages: users and their role grants, the systems register, the holiday
//! calendar years, the notification queue. Each page needs the permission of the API that reads
//! the same thing, each form the permission of the API that writes it (checked here first, then
//! decided again by the same domain function the API calls). Refusals are audited like the
//! API's and explained on the page; nothing is written.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pages::{error_page, frame, not_permitted, refused, render, with};
use super::{Lang, Session};
use crate::App;
use crate::accounts::{self, CreateUser, GrantRole, UpdateUser};
use crate::changes::systems::{self, NewSystem, SystemPatch};
use crate::db::users as users_db;
use crate::error::Error;
use crate::rbac::{Facts, Resource};
use crate::workdays::{self, DayInput, YearInput};

type Flash = Option<(StatusCode, String)>;

/// Status and the flash fields of a page.
fn flash_fields(flash: Flash) -> (StatusCode, Value) {
    match flash {
        Some((status, text)) => (status, json!({"flash": text, "flash_kind": "error"})),
        None => (StatusCode::OK, json!({})),
    }
}

fn refused_here() -> Error {
    Error::forbidden(Vec::new())
}

// ---- users ----

#[derive(Deserialize, Serialize, Default)]
pub struct UserForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    email: String,
    #[serde(default, skip_serializing)]
    password: String,
}

async fn users_page(app: &App, s: &Session, form: &UserForm, flash: Flash) -> Response {
    if !s.may(app, "user.read") {
        return not_permitted(app, s);
    }
    let now = app.now();
    let users = match users_db::list(&app.db).await {
        Ok(u) => u,
        Err(e) => return error_page(app, Some(s), s.lang, e.into()),
    };
    let mut rows = Vec::with_capacity(users.len());
    for u in users {
        let roles = match users_db::roles_of(&app.db, u.id, now).await {
            Ok(r) => r,
            Err(e) => return error_page(app, Some(s), s.lang, e.into()),
        };
        rows.push(
            json!({"id": u.id, "username": u.username, "display_name": u.display_name,
                         "department": u.department, "active": u.active, "roles": roles}),
        );
    }
    let (status, flash) = flash_fields(flash);
    let ctx = with(
        with(frame(app, s, "用户与角色 / Users and roles"), flash),
        json!({"users": rows, "form": form, "can_manage": s.may(app, "user.manage")}),
    );
    render("users.html", ctx, status)
}

pub async fn users(State(app): State<App>, s: Session) -> Response {
    users_page(&app, &s, &UserForm::default(), None).await
}

pub async fn create_user(State(app): State<App>, s: Session, Form(f): Form<UserForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "user.manage") {
        let req = CreateUser {
            username: f.username.clone(),
            display_name: f.display_name.clone(),
            department: f.department.clone(),
            email: f.email.clone(),
            password: SecretString::from(f.password.clone()),
        };
        accounts::create_user(&app, Some(&who), req).await
    } else {
        Err(refused_here())
    };
    match result {
        Ok(u) => Redirect::to(&format!("/console/admin/users/{}", u.id)).into_response(),
        Err(e) => {
            let flash = refused(
                &app,
                &s,
                "user.create",
                "POST /console/admin/users".into(),
                e,
            )
            .await;
            users_page(&app, &s, &f, Some(flash)).await
        }
    }
}

async fn user_page(app: &App, s: &Session, id: i64, flash: Flash) -> Response {
    if !s.may(app, "user.read") {
        return not_permitted(app, s);
    }
    let lang = s.lang;
    let view = match accounts::view(app, id).await {
        Ok(v) => v,
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    let tz = app.policies.change.timezone;
    let now = app.now();
    let can_grant = s.may(app, "role.grant");
    let title = |name: &str| {
        app.policies.roles.get(name).map_or(name.to_string(), |r| {
            lang.tr(&r.title_zh, &r.title_en).to_string()
        })
    };
    // The roles the policies let this admin grant to this user (the server decides again).
    let decide = |role: &str, revoke: bool| {
        app.policies
            .authorizer
            .decide(
                &s.who,
                "role.grant",
                &Resource::Role(role),
                &Facts {
                    grantee: Some(id),
                    revoke,
                    ..Facts::default()
                },
            )
            .allowed
    };
    let grants: Vec<Value> = view
        .grants
        .iter()
        .map(|g| {
            json!({
                "role": g.role,
                "title": title(&g.role),
                "granted_at": lang.moment(g.granted_at, tz),
                "expires_at": g.expires_at.map(|t| lang.moment(t, tz)),
                "expired": g.expires_at.is_some_and(|t| t <= now),
            })
        })
        .collect();
    let roles: Vec<Value> = if can_grant {
        app.policies
            .roles
            .names()
            .filter(|name| decide(name, false))
            .map(|name| json!({"name": name, "title": title(name)}))
            .collect()
    } else {
        Vec::new()
    };
    let (status, flash) = flash_fields(flash);
    let u = &view.user;
    let ctx = with(
        with(
            frame(app, s, &format!("{}（{}）", u.display_name, u.username)),
            flash,
        ),
        json!({
            "u": u,
            "created": lang.moment(u.created_at, tz),
            "grants": grants,
            "roles": roles,
            "can_manage": s.may(app, "user.manage"),
            "can_grant": can_grant,
        }),
    );
    render("user.html", ctx, status)
}

pub async fn user(State(app): State<App>, s: Session, Path(id): Path<i64>) -> Response {
    user_page(&app, &s, id, None).await
}

#[derive(Deserialize)]
pub struct ActiveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    active: String,
}

pub async fn set_active(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<ActiveForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "user.manage") {
        let req = UpdateUser {
            active: Some(f.active == "true"),
            ..UpdateUser::default()
        };
        accounts::update_user(&app, &who, id, req).await
    } else {
        Err(refused_here())
    };
    match result {
        Ok(_) => Redirect::to(&format!("/console/admin/users/{id}")).into_response(),
        Err(e) => {
            let target = format!("POST /console/admin/users/{id}/active");
            let flash = refused(&app, &s, "user.update", target, e).await;
            user_page(&app, &s, id, Some(flash)).await
        }
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
    /// `datetime-local`, bank time; empty: no expiry.
    #[serde(default)]
    expires_at: String,
}

pub async fn grant(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<GrantForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "role.grant") {
        let expires_at = match f.expires_at.trim() {
            "" => Ok(None),
            v => {
                super::pages::local_time(&app, "expires_at", v).map(|t| Some(t.with_timezone(&Utc)))
            }
        };
        match expires_at {
            Ok(expires_at) => {
                let req = GrantRole {
                    role: f.role.clone(),
                    expires_at,
                };
                accounts::grant_role(&app, &who, id, req).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    } else {
        Err(refused_here())
    };
    match result {
        Ok(()) => Redirect::to(&format!("/console/admin/users/{id}")).into_response(),
        Err(e) => {
            let target = format!("POST /console/admin/users/{id}/roles");
            let flash = refused(&app, &s, "role.grant", target, e).await;
            user_page(&app, &s, id, Some(flash)).await
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke(
    State(app): State<App>,
    s: Session,
    Path((id, role)): Path<(i64, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "role.grant") {
        accounts::revoke_role(&app, &who, id, &role).await
    } else {
        Err(refused_here())
    };
    match result {
        Ok(()) => Redirect::to(&format!("/console/admin/users/{id}")).into_response(),
        Err(e) => {
            let target = format!("POST /console/admin/users/{id}/roles/{role}/revoke");
            let flash = refused(&app, &s, "role.revoke", target, e).await;
            user_page(&app, &s, id, Some(flash)).await
        }
    }
}

// ---- systems ----

#[derive(Deserialize, Serialize, Default)]
pub struct SystemForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner_department: String,
}

async fn systems_page(app: &App, s: &Session, form: &SystemForm, flash: Flash) -> Response {
    if !s.may(app, "change.read") {
        return not_permitted(app, s);
    }
    let tz = app.policies.change.timezone;
    let list = match crate::db::changes::list_systems(&app.db).await {
        Ok(l) => l,
        Err(e) => return error_page(app, Some(s), s.lang, e.into()),
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|x| {
            json!({"key": x.key, "name": x.name, "owner_department": x.owner_department,
                   "updated": s.lang.moment(x.updated_at, tz)})
        })
        .collect();
    let (status, flash) = flash_fields(flash);
    let ctx = with(
        with(frame(app, s, "系统登记 / Systems register"), flash),
        json!({"systems": rows, "form": form, "can_manage": s.may(app, "system.manage")}),
    );
    render("systems.html", ctx, status)
}

pub async fn systems(State(app): State<App>, s: Session) -> Response {
    systems_page(&app, &s, &SystemForm::default(), None).await
}

pub async fn create_system(
    State(app): State<App>,
    s: Session,
    Form(f): Form<SystemForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "system.manage") {
        let req = NewSystem {
            key: f.key.clone(),
            name: f.name.clone(),
            owner_department: f.owner_department.clone(),
        };
        systems::create(&app, &who, req).await
    } else {
        Err(refused_here())
    };
    match result {
        Ok(_) => Redirect::to("/console/admin/systems").into_response(),
        Err(e) => {
            let target = "POST /console/admin/systems".to_string();
            let flash = refused(&app, &s, "system.create", target, e).await;
            systems_page(&app, &s, &f, Some(flash)).await
        }
    }
}

pub async fn update_system(
    State(app): State<App>,
    s: Session,
    Path(key): Path<String>,
    Form(f): Form<SystemForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "system.manage") {
        let req = SystemPatch {
            name: Some(f.name.clone()),
            owner_department: Some(f.owner_department.clone()),
        };
        systems::update(&app, &who, &key, req).await
    } else {
        Err(refused_here())
    };
    match result {
        Ok(_) => Redirect::to("/console/admin/systems").into_response(),
        Err(e) => {
            let target = format!("POST /console/admin/systems/{key}");
            let flash = refused(&app, &s, "system.update", target, e).await;
            systems_page(&app, &s, &SystemForm::default(), Some(flash)).await
        }
    }
}

// ---- holiday calendar years ----

#[derive(Deserialize, Serialize, Default)]
pub struct YearForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    year: String,
    #[serde(default)]
    source: String,
    /// One day a line: `YYYY-MM-DD name`.
    #[serde(default)]
    days_off: String,
    #[serde(default)]
    makeup_workdays: String,
}

/// `2027-01-01 元旦` lines into the days the API takes; a bad line is named.
fn day_lines(lang: Lang, field: &str, text: &str) -> Result<Vec<DayInput>, Error> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (date, name) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(d, n)| (d, n.trim()));
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                Error::invalid(
                    "calendar_invalid",
                    lang.tr(
                        &format!("{field}：无法识别 “{line}”，每行应为 “YYYY-MM-DD 名称”"),
                        &format!("{field}: cannot read “{line}”; each line is “YYYY-MM-DD name”"),
                    )
                    .to_string(),
                )
            })?;
            Ok(DayInput {
                date,
                name: name.to_string(),
            })
        })
        .collect()
}

async fn years_page(app: &App, s: &Session, form: &YearForm, flash: Flash) -> Response {
    let lang = s.lang;
    let status = match workdays::status(app).await {
        Ok(st) => st,
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    // By default the form offers next year, the one the autumn notice is about.
    let next_year = YearForm {
        year: (chrono::Datelike::year(&status.today) + 1).to_string(),
        ..YearForm::default()
    };
    let form = if form.year.is_empty() {
        &next_year
    } else {
        form
    };
    let warning = status.warning.as_deref().map(|w| lang.pick(w));
    let (code, flash) = flash_fields(flash);
    let ctx = with(
        with(frame(app, s, "节假日历 / Holiday calendar"), flash),
        json!({"status": status, "warning": warning, "today": lang.day(status.today),
               "form": form, "can_manage": s.may(app, "calendar.manage")}),
    );
    render("years.html", ctx, code)
}

/// Every signed-in user may read the loaded years (as `GET /api/v1/working-days/status`).
pub async fn years(State(app): State<App>, s: Session) -> Response {
    years_page(&app, &s, &YearForm::default(), None).await
}

pub async fn load_year(State(app): State<App>, s: Session, Form(f): Form<YearForm>) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "calendar.manage") {
        let input = f
            .year
            .trim()
            .parse::<i32>()
            .map_err(|_| Error::invalid("calendar_invalid", "年份无效 / Not a year"))
            .and_then(|year| {
                Ok((
                    year,
                    YearInput {
                        source: f.source.clone(),
                        days_off: day_lines(s.lang, "days_off", &f.days_off)?,
                        makeup_workdays: day_lines(s.lang, "makeup_workdays", &f.makeup_workdays)?,
                    },
                ))
            });
        match input {
            Ok((year, input)) => workdays::load_year(&app, &who, year, input).await,
            Err(e) => Err(e),
        }
    } else {
        Err(refused_here())
    };
    match result {
        Ok(_) => Redirect::to("/console/admin/calendar").into_response(),
        Err(e) => {
            let target = "POST /console/admin/calendar".to_string();
            let flash = refused(&app, &s, "calendar.load_year", target, e).await;
            years_page(&app, &s, &f, Some(flash)).await
        }
    }
}

// ---- notification queue ----

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    #[serde(default)]
    status: String,
}

async fn queue_page(app: &App, s: &Session, status: &str, flash: Flash) -> Response {
    if !s.may(app, "notification.read") {
        return not_permitted(app, s);
    }
    let lang = s.lang;
    let tz = app.policies.change.timezone;
    let filter = Some(status).filter(|st| !st.is_empty());
    let list = match crate::notify::list(app, None, filter).await {
        Ok(l) => l,
        Err(e) => return error_page(app, Some(s), lang, e),
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|n| {
            json!({"id": n.id, "kind": n.kind, "change_id": n.change_id,
                   "recipients": n.recipients, "subject": n.subject, "status": n.status,
                   "attempts": n.attempts, "last_error": n.last_error,
                   "created_at": lang.moment(n.created_at, tz),
                   "sent_at": n.sent_at.map(|t| lang.moment(t, tz))})
        })
        .collect();
    let (code, flash) = flash_fields(flash);
    let ctx = with(
        with(frame(app, s, "通知队列 / Notification queue"), flash),
        json!({"notices": rows, "status": status, "statuses": crate::notify::STATUSES,
               "can_retry": s.may(app, "notification.retry")}),
    );
    render("notifications.html", ctx, code)
}

pub async fn notifications(
    State(app): State<App>,
    s: Session,
    Query(q): Query<QueueQuery>,
) -> Response {
    queue_page(&app, &s, &q.status, None).await
}

pub async fn retry(
    State(app): State<App>,
    s: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = if let Some(who) = s.acting(&app, "notification.retry") {
        crate::notify::retry(&app, &who, id).await.map(|_| ())
    } else {
        Err(refused_here())
    };
    match result {
        Ok(()) => Redirect::to("/console/admin/notifications?status=dead").into_response(),
        Err(e) => {
            let target = format!("POST /console/admin/notifications/{id}/retry");
            let flash = refused(&app, &s, "notification.retry", target, e).await;
            queue_page(&app, &s, "", Some(flash)).await
        }
    }
}
