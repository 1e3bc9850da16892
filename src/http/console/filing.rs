//! 提交变更 / The filing form: systems chosen from the register (with a search), the action
//! offered from the chosen category's list, the risk in words, the window with date-time
//! pickers in the bank's time zone, the live notice check; and filing from a standard-change
//! template the filer may use. Same domain functions as the API (`changes::file`,
//! `changes::file_standard`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pages::{error_page, frame, local_time, not_permitted, refused, render, with};
use super::{Lang, Session};
use crate::App;
use crate::changes::{self, FileChange, FileStandardChange, words};
use crate::error::Error;

const TITLE: &str = "提交变更 / File a change";

#[derive(Deserialize, Default, Serialize)]
pub struct ChangeForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    action: String,
    /// Keys of the systems register, one field each.
    #[serde(default)]
    systems: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    risk: String,
    #[serde(default)]
    rollback_plan: String,
    #[serde(default)]
    planned_start: String,
    #[serde(default)]
    planned_end: String,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    emergency: Option<String>,
    #[serde(default)]
    justification: String,
}

/// The risk levels as the form offers them: what each means, in words.
fn risks(lang: Lang) -> Vec<Value> {
    [
        (
            "low",
            "影响小，可随时回退",
            "little impact, easy to roll back",
        ),
        (
            "medium",
            "影响部分业务，回退需时",
            "affects some business, rollback takes time",
        ),
        (
            "high",
            "影响核心业务或客户，须合规会签",
            "affects core business or customers; compliance signs off",
        ),
    ]
    .into_iter()
    .map(|(key, zh, en)| {
        let (name_zh, name_en) = words::risk(key);
        json!({"key": key, "title": format!("{} — {}", lang.tr(name_zh, name_en), lang.tr(zh, en))})
    })
    .collect()
}

/// The standard-change templates this person may file, as the form shows them.
fn templates(app: &App, s: &Session) -> Vec<Value> {
    app.policies
        .standard
        .templates
        .iter()
        .filter(|(_, t)| s.who.roles.iter().any(|r| t.roles.contains(r)))
        .map(|(key, t)| {
            let (rz, re) = words::risk(&t.risk);
            json!({
                "key": key, "title": s.lang.tr(&t.title_zh, &t.title_en),
                "category": super::pages::category_title(app, s.lang, &t.category),
                "systems": t.systems, "risk": s.lang.tr(rz, re),
                "description": s.lang.pick(&t.description),
                "rollback_plan": s.lang.pick(&t.rollback_plan),
                "approved_by": s.lang.pick(&t.approved_by),
            })
        })
        .collect()
}

async fn form_page(
    app: &App,
    s: &Session,
    form: &ChangeForm,
    flash: Option<(StatusCode, String)>,
) -> Response {
    let tz = app.policies.change.timezone;
    let today = app.now().with_timezone(&tz).date_naive();
    let built = async {
        let earliest = crate::workdays::earliest_start(app, today).await?;
        let systems = crate::db::changes::list_systems(&app.db).await?;
        Ok::<_, Error>((earliest, systems))
    }
    .await;
    let (earliest, systems) = match built {
        Ok(x) => x,
        Err(e) => return error_page(app, Some(s), s.lang, e),
    };
    let systems: Vec<Value> = systems
        .iter()
        .map(|x| {
            json!({"key": x.key, "name": x.name, "department": x.owner_department,
                   "chosen": form.systems.contains(&x.key)})
        })
        .collect();
    let categories: Vec<Value> = app
        .policies
        .change
        .categories
        .iter()
        .map(|(k, c)| {
            let actions: Vec<Value> = c
                .actions
                .iter()
                .map(|a| json!({"key": a, "title": s.lang.tr(words::action(a).0, words::action(a).1)}))
                .collect();
            json!({"key": k, "title": s.lang.tr(&c.title_zh, &c.title_en), "actions": actions})
        })
        .collect();
    let (status, flash, kind) = match flash {
        Some((status, text)) => (status, Some(text), "error"),
        None => (StatusCode::OK, None, ""),
    };
    let ctx = with(
        frame(app, s, TITLE),
        json!({
            "form": form,
            "categories": categories,
            "systems": systems,
            "risks": risks(s.lang),
            "templates": templates(app, s),
            "earliest": earliest.earliest_start.to_string(),
            "notice_days": app.policies.change.notice.working_days,
            "flash": flash,
            "flash_kind": kind,
        }),
    );
    render("new_change.html", ctx, status)
}

/// `GET /console/changes/new`.
pub async fn new_change(State(app): State<App>, s: Session) -> Response {
    if !s.may(&app, "change.create") {
        return not_permitted(&app, &s);
    }
    let form = ChangeForm {
        risk: "medium".into(),
        ..ChangeForm::default()
    };
    form_page(&app, &s, &form, None).await
}

fn opt(v: &str) -> Option<String> {
    Some(v.trim().to_string()).filter(|v| !v.is_empty())
}

fn chosen(systems: &[String]) -> Vec<String> {
    systems
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn to_request(app: &App, f: &ChangeForm) -> Result<FileChange, Error> {
    Ok(FileChange {
        title: f.title.trim().to_string(),
        category: f.category.clone(),
        action: opt(&f.action),
        systems: chosen(&f.systems),
        description: f.description.clone(),
        impact: opt(&f.impact),
        risk: serde_json::from_value(json!(f.risk)).map_err(|_| {
            Error::invalid(
                "invalid_body",
                "风险须为 low、medium 或 high / risk must be low, medium or high",
            )
        })?,
        rollback_plan: f.rollback_plan.clone(),
        planned_start: local_time(app, "planned_start", &f.planned_start)?,
        planned_end: local_time(app, "planned_end", &f.planned_end)?,
        assignee: opt(&f.assignee),
        emergency: f.emergency.is_some(),
        justification: opt(&f.justification),
    })
}

/// `POST /console/changes/new`, as `POST /api/v1/changes`.
pub async fn file_change(
    State(app): State<App>,
    s: Session,
    Form(f): Form<ChangeForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let result = match s.acting(&app, "change.create") {
        None => Err(Error::forbidden(Vec::new())),
        Some(who) => match to_request(&app, &f) {
            Ok(req) => changes::file(&app, &who, req).await,
            Err(e) => Err(e),
        },
    };
    let target = "POST /console/changes/new".to_string();
    filed(&app, &s, "change.create", target, result, &f).await
}

#[derive(Deserialize)]
pub struct StandardForm {
    #[serde(default)]
    csrf: String,
    /// Some of the template's systems (all when none is chosen).
    #[serde(default)]
    systems: Vec<String>,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    planned_start: String,
    #[serde(default)]
    planned_end: String,
    #[serde(default)]
    assignee: String,
}

/// `POST /console/changes/standard/{key}`: files from a standard-change template, as
/// `POST /api/v1/standard-changes/{key}/changes` (approved by the template at filing, still
/// bound by the notice rule and the freeze windows).
pub async fn file_standard(
    State(app): State<App>,
    s: Session,
    Path(key): Path<String>,
    Form(f): Form<StandardForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return super::csrf_refused(s.lang);
    }
    let window = local_time(&app, "planned_start", &f.planned_start)
        .and_then(|start| Ok((start, local_time(&app, "planned_end", &f.planned_end)?)));
    let result = match (s.acting(&app, "change.create"), window) {
        (None, _) => Err(Error::forbidden(Vec::new())),
        (Some(_), Err(e)) => Err(e),
        (Some(who), Ok((planned_start, planned_end))) => {
            let systems = chosen(&f.systems);
            let req = FileStandardChange {
                title: None,
                systems: (!systems.is_empty()).then_some(systems),
                impact: opt(&f.impact),
                planned_start,
                planned_end,
                assignee: opt(&f.assignee),
            };
            changes::file_standard(&app, &who, &key, req).await
        }
    };
    let form = ChangeForm {
        risk: "medium".into(),
        ..ChangeForm::default()
    };
    let target = format!("POST /console/changes/standard/{key}");
    filed(&app, &s, "change.create_standard", target, result, &form).await
}

/// Filed: to the change's page; refused: audited and explained on the form, kept as filled.
async fn filed(
    app: &App,
    s: &Session,
    operation: &str,
    target: String,
    result: Result<changes::ChangeView, Error>,
    form: &ChangeForm,
) -> Response {
    match result {
        Ok(c) => Redirect::to(&format!("/console/changes/{}", c.id)).into_response(),
        Err(e) => {
            let flash = refused(app, s, operation, target, e).await;
            form_page(app, s, form, Some(flash)).await
        }
    }
}
