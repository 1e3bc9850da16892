//! Email notices that are never lost: the transactional outbox, its sender and the schedules.
//!
//! A notice is a row of `outbox` written in the SAME transaction as the change that causes it
//! ([`enqueue_change`], called from `changes::record`). After the commit the worker
//! ([`worker`]) is woken; it claims due rows with a lease, sends them through lettre (SMTP, or
//! `.eml` files when no server is configured), retries with exponential backoff and finally
//! marks them `dead` for a manager to retry. Who gets what is `policies/notifications.toml`;
//! the words are the templates in `templates/email/{zh,en}/`.

pub mod schedule;
pub mod templates;
pub mod worker;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::json;

use crate::App;
use crate::audit::Entry;
use crate::db::changes::{self as change_db, ChangeRow};
use crate::db::notify::{self as db, IcsMethod, Invitation, NewMessage, OutboxRow};
use crate::db::{StoreError, Tx};
use crate::deed::{Bookkeeping, Deed};
use crate::error::{Error, Result};
use crate::policy::Recipient;
use crate::rbac::Principal;

pub use templates::Templates;
pub use worker::Notifier;

/// The title of an event in the notice's language.
fn event_title(event: &str, lang: &str) -> &'static str {
    let (zh, en) = match event {
        "filed" => ("已提交，请管理部门知悉", "filed: notice to management"),
        "receipt" => ("已提交（回执）", "filed (receipt)"),
        "approved" => ("已批准", "approved"),
        "rejected" => ("已驳回", "rejected"),
        "rescheduled" => (
            "已修改或改期，待重新审批",
            "amended or rescheduled, to be approved again",
        ),
        "started" => ("已开始实施", "started"),
        "completed" => ("已完成", "completed"),
        "cancelled" => ("已撤销", "cancelled"),
        "expired" => (
            "已过期（未在窗口内开始）",
            "expired (never started in its window)",
        ),
        "reviewed" => ("已完成事后复核", "reviewed after the fact"),
        "overdue" => (
            "已超过计划结束时间仍在实施中：请完成或改期，此前不能取用凭据",
            "past its planned end and still in progress: complete or reschedule it (no credential is revealed until then)",
        ),
        "reminder" => ("将于下一个工作日开始", "starts on the next working day"),
        "approval_requested" => ("待您审批", "waits for your approval"),
        "approval_reminder" => (
            "审批提醒：已等待较长时间",
            "approval reminder: waiting long",
        ),
        "approval_escalated" => ("审批超时升级", "approval escalated: waiting too long"),
        _ => ("通知", "notice"),
    };
    if lang == "en" { en } else { zh }
}

/// Local time as the notices show it.
fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

#[derive(Serialize)]
struct ChangeCtx {
    id: i64,
    title: String,
    category: String,
    action: Option<String>,
    systems: Vec<String>,
    description: String,
    risk: String,
    rollback_plan: String,
    planned_start: String,
    planned_end: String,
    notified_on: String,
    earliest_start: Option<String>,
    status: String,
    requester: String,
    assignee: String,
    emergency: bool,
    justification: Option<String>,
    link: String,
}

/// A pair of words in the notices' language.
pub fn words_of(app: &App, (zh, en): (&str, &str)) -> String {
    app.notifier.templates.pick(zh, en).to_string()
}

/// The change's console page: what a person opens from a notice (the API answers JSON).
pub fn change_link(app: &App, id: i64) -> String {
    format!("{}/console/changes/{id}", app.settings.public_url())
}

fn change_ctx(app: &App, r: &ChangeRow) -> ChangeCtx {
    use crate::changes::words;

    let tz = app.policies.change.timezone;
    let lang = app.notifier.templates.language.as_str();
    let category = app.policies.change.categories.get(&r.category).map_or_else(
        || r.category.clone(),
        |c| {
            if lang == "en" {
                c.title_en.clone()
            } else {
                c.title_zh.clone()
            }
        },
    );
    ChangeCtx {
        id: r.id,
        title: r.title.clone(),
        category,
        action: r.action.as_deref().map(|a| words_of(app, words::action(a))),
        systems: serde_json::from_str(&r.systems).unwrap_or_default(),
        description: r.description.clone(),
        risk: words_of(app, words::risk(&r.risk)),
        rollback_plan: r.rollback_plan.clone(),
        planned_start: local(r.planned_start, tz),
        planned_end: local(r.planned_end, tz),
        notified_on: r.notified_on.clone(),
        earliest_start: r.earliest_start.clone(),
        status: words_of(app, words::status(&r.status)),
        requester: format!("{} ({})", r.requester_name, r.requester_username),
        assignee: format!("{} ({})", r.assignee_name, r.assignee_username),
        emergency: r.emergency,
        justification: r.justification.clone(),
        link: change_link(app, r.id),
    }
}

/// The change's calendar entry, METHOD:REQUEST (or CANCEL when it will not happen), with the
/// same UID as the calendar feed so a client updates the entry it already has.
/// The organizer is the sender's address and each recipient an attendee (RFC 5546).
pub fn change_ics(
    app: &App,
    row: &ChangeRow,
    method: IcsMethod,
    recipients: &[String],
) -> Invitation {
    let policy = &app.policies.change;
    let organizer = app.notifier.from.email.to_string();
    let text = crate::changes::agenda::render_ics(
        std::slice::from_ref(row),
        policy.timezone,
        &app.settings.public_url(),
        |c| policy.categories.get(c).map(|c| c.title_zh.clone()),
        Some(&crate::changes::agenda::Invitees {
            organizer: &organizer,
            attendees: recipients,
        }),
    );
    let text = text.replacen(
        "BEGIN:VCALENDAR\r\n",
        &format!("BEGIN:VCALENDAR\r\nMETHOD:{}\r\n", method.as_str()),
        1,
    );
    Invitation { method, text }
}

/// The people the party rules of a notice mean (`requester`, `assignee`, `custodian`, and the
/// change category whose `management` is told). Which ones an event has is
/// [`crate::policy::parties_of`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Parties<'a> {
    pub requester: Option<i64>,
    pub assignee: Option<i64>,
    pub custodian: Option<i64>,
    pub category: Option<&'a str>,
    /// Who may decide the waiting approval stage (with their delegates).
    pub approvers: &'a [i64],
    /// The role the waiting stage escalates to.
    pub escalate_to: Option<&'a str>,
}

impl<'a> Parties<'a> {
    pub fn of_change(c: &'a ChangeRow) -> Self {
        Parties {
            requester: Some(c.requester_id),
            assignee: Some(c.assignee_id),
            custodian: None,
            category: Some(&c.category),
            approvers: &[],
            escalate_to: None,
        }
    }
}

/// Resolves recipient rules to addresses (deduplicated, in order).
async fn resolve(
    app: &App,
    tx: &mut Tx,
    rules: &[Recipient],
    parties: Parties<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let push = |a: String, out: &mut Vec<String>| {
        if crate::policy::valid_address(&a) && !out.contains(&a) {
            out.push(a);
        }
    };
    for rule in rules {
        let person = match rule {
            Recipient::Requester => parties.requester,
            Recipient::Assignee => parties.assignee,
            Recipient::Custodian => parties.custodian,
            Recipient::Management => {
                if let Some(cat) = parties
                    .category
                    .and_then(|c| app.policies.change.categories.get(c))
                {
                    for role in &cat.notify_roles {
                        for a in db::role_emails(tx, role, now).await? {
                            push(a, &mut out);
                        }
                    }
                    for m in &cat.notify_mailboxes {
                        push(m.clone(), &mut out);
                    }
                }
                None
            }
            Recipient::Approvers => {
                for id in parties.approvers {
                    push(db::user_email(tx, *id).await?, &mut out);
                }
                None
            }
            Recipient::Escalation => {
                if let Some(role) = parties.escalate_to {
                    for a in db::role_emails(tx, role, now).await? {
                        push(a, &mut out);
                    }
                }
                None
            }
            Recipient::Role(role) => {
                for a in db::role_emails(tx, role, now).await? {
                    push(a, &mut out);
                }
                None
            }
            Recipient::Mailbox(m) => {
                push(m.clone(), &mut out);
                None
            }
        };
        if let Some(id) = person {
            push(db::user_email(tx, id).await?, &mut out);
        }
    }
    Ok(out)
}

fn render_error(e: minijinja::Error) -> Error {
    Error::Internal(anyhow::anyhow!("email template: {e}"))
}

/// The webhook deliveries of a change's event (the receipt is the requester's alone).
async fn change_webhooks(
    app: &App,
    tx: &mut Deed<'_>,
    row: &ChangeRow,
    event: &str,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let c = change_ctx(app, row);
    let mut lines = vec![
        format!("系统 / Systems: {}", c.systems.join(", ")),
        format!("窗口 / Window: {} – {}", c.planned_start, c.planned_end),
        format!("申请人 / Requester: {}", c.requester),
        format!("执行人 / Assignee: {}", c.assignee),
    ];
    if row.emergency {
        lines.push("紧急变更 / Emergency change".into());
    }
    if let Some(comment) = comment {
        lines.push(format!("说明 / Comment: {comment}"));
    }
    let event_data = crate::webhooks::Event {
        kind: event,
        change_id: Some(row.id),
        title: format!(
            "变更 #{} {} / Change #{} {}: {}",
            row.id,
            event_title(event, "zh"),
            row.id,
            event_title(event, "en"),
            row.title
        ),
        lines,
        link: Some(format!(
            "{}/api/v1/changes/{}",
            app.settings.public_url(),
            row.id
        )),
        change: Some(json!({
            "id": row.id, "title": row.title, "category": row.category, "action": row.action,
            "systems": c.systems, "status": row.status, "emergency": row.emergency,
            "planned_start": row.planned_start, "planned_end": row.planned_end,
            "requester": row.requester_username, "assignee": row.assignee_username,
        })),
    };
    crate::webhooks::enqueue(tx, &event_data, now).await?;
    Ok(())
}

/// Writes the notices of `event` about change `id` into the outbox, inside the caller's
/// transaction (so they commit, or vanish, with the change). Filing also sends the receipt.
pub async fn enqueue_change(
    app: &App,
    tx: &mut Deed<'_>,
    id: i64,
    event: &str,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let notice = ChangeNotice {
        event,
        comment,
        approvers: &[],
        escalate_to: None,
    };
    enqueue_change_to(app, tx, id, &notice, now).await
}

/// A change's notice with the people of its waiting approval stage.
#[derive(Debug, Clone, Copy)]
pub struct ChangeNotice<'a> {
    pub event: &'a str,
    pub comment: Option<&'a str>,
    /// Who may decide the waiting stage (`approvers`).
    pub approvers: &'a [i64],
    /// The role it escalates to (`escalation`).
    pub escalate_to: Option<&'a str>,
}

/// [`enqueue_change`] for an event that also tells a stage's approvers or escalation role.
pub async fn enqueue_change_to(
    app: &App,
    tx: &mut Deed<'_>,
    id: i64,
    notice: &ChangeNotice<'_>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let ChangeNotice {
        event,
        comment,
        approvers,
        escalate_to,
    } = *notice;
    let row = change_db::get_change_for_update(tx, id).await?;
    let events: &[&str] = if event == "filed" {
        &["filed", "receipt"]
    } else {
        std::slice::from_ref(&event)
    };
    let policy = &app.policies.notifications;
    let method = if matches!(event, "rejected" | "cancelled" | "expired") {
        IcsMethod::Cancel
    } else {
        IcsMethod::Request
    };
    change_webhooks(app, tx, &row, event, comment, now).await?;
    let mut n = 0;
    for ev in events {
        let mut rules = policy.recipients(ev).to_vec();
        // Compliance hears of every emergency, but the receipt is the requester's alone.
        if row.emergency && *ev != "receipt" {
            rules.extend(policy.recipients("emergency_also").iter().cloned());
        }
        let parties = Parties {
            approvers,
            escalate_to,
            ..Parties::of_change(&row)
        };
        let recipients = resolve(app, tx, &rules, parties, now).await?;
        if recipients.is_empty() {
            continue;
        }
        let ics = change_ics(app, &row, method, &recipients);
        let lang = app.notifier.templates.language.as_str();
        let ctx = json!({
            "event": ev,
            "event_title": event_title(ev, lang),
            "change": change_ctx(app, &row),
            "comment": comment,
            "timezone": app.policies.change.timezone.name(),
            "link": change_link(app, row.id),
        });
        let r = app
            .notifier
            .templates
            .render("change", &ctx)
            .map_err(render_error)?;
        db::insert_message(
            tx,
            &NewMessage {
                kind: ev,
                change_id: Some(row.id),
                recipients: &recipients,
                subject: &r.subject,
                body_text: &r.text,
                body_html: &r.html,
                ics: Some(&ics),
            },
            &app.notifier.host,
            now,
        )
        .await?;
        tx.queued();
        n += 1;
    }
    Ok(n)
}

/// A notice about something other than one change (a disclosure, a reveal, a standing grant):
/// a headline, facts as label/value pairs, an optional comment and link. Rendered by the
/// `notice` template; the labels are in the notices' language.
#[derive(Debug, Serialize)]
pub struct Bulletin {
    pub headline: String,
    pub facts: Vec<(String, String)>,
    pub comment: Option<String>,
    pub link: Option<String>,
}

impl Bulletin {
    pub fn new(app: &App, zh: &str, en: &str) -> Self {
        Bulletin {
            headline: app.notifier.templates.pick(zh, en).to_string(),
            facts: Vec::new(),
            comment: None,
            link: None,
        }
    }

    /// Adds a fact labelled in the notices' language.
    pub fn fact(mut self, app: &App, zh: &str, en: &str, value: impl ToString) -> Self {
        self.facts.push((
            app.notifier.templates.pick(zh, en).to_string(),
            value.to_string(),
        ));
        self
    }

    pub fn comment(mut self, c: Option<&str>) -> Self {
        self.comment = c.map(str::to_string);
        self
    }

    /// A link to a page of this service (e.g. `/console/assets#asset-3`).
    pub fn link(mut self, app: &App, path: &str) -> Self {
        self.link = Some(format!("{}{path}", app.settings.public_url()));
        self
    }
}

/// Writes the notice of `event` (a `policies/notifications.toml` event that concerns no single
/// change) into the outbox inside the caller's transaction: it commits, or vanishes, with the
/// deed it tells of. Wake the sender after the commit. `false` when the event has no recipients.
pub async fn enqueue_bulletin(
    app: &App,
    tx: &mut Deed<'_>,
    event: &str,
    parties: Parties<'_>,
    bulletin: &Bulletin,
    now: DateTime<Utc>,
) -> Result<bool> {
    let hook = crate::webhooks::Event {
        kind: event,
        change_id: None,
        title: bulletin.headline.clone(),
        lines: bulletin
            .facts
            .iter()
            .map(|(label, value)| format!("{label}: {value}"))
            .collect(),
        link: bulletin.link.clone(),
        change: None,
    };
    crate::webhooks::enqueue(tx, &hook, now).await?;
    let rules = app.policies.notifications.recipients(event).to_vec();
    let recipients = resolve(app, tx, &rules, parties, now).await?;
    if recipients.is_empty() {
        return Ok(false);
    }
    let r = app
        .notifier
        .templates
        .render("notice", bulletin)
        .map_err(render_error)?;
    db::insert_message(
        tx,
        &NewMessage {
            kind: event,
            change_id: None,
            recipients: &recipients,
            subject: &r.subject,
            body_text: &r.text,
            body_html: &r.html,
            ics: None,
        },
        &app.notifier.host,
        now,
    )
    .await?;
    tx.queued();
    Ok(true)
}

/// Ends a deed's transaction that tells of itself by e-mail: queues the notice of `event`,
/// appends the audit entry LAST (it locks the chain's head, which every writer needs; see
/// `changes::record`), commits, and wakes the sender.
pub async fn commit_with_bulletin(
    app: &App,
    mut tx: Deed<'_>,
    notice: (&str, Parties<'_>, &Bulletin),
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    let (event, parties, bulletin) = notice;
    enqueue_bulletin(app, &mut tx, event, parties, bulletin, now).await?;
    tx.commit(entry, now).await?;
    Ok(())
}

/// Writes one notice not tied to a change's transaction (digest, warning), then wakes the sender.
pub async fn enqueue_other(
    app: &App,
    kind: &str,
    template: &str,
    ctx: &serde_json::Value,
    change: Option<&ChangeRow>,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let mut tx = Deed::open(app).await?;
    let rules = app.policies.notifications.recipients(kind).to_vec();
    let parties = change.map(Parties::of_change).unwrap_or_default();
    let recipients = resolve(app, &mut tx, &rules, parties, now).await?;
    if recipients.is_empty() {
        return Ok(None);
    }
    let r = app
        .notifier
        .templates
        .render(template, ctx)
        .map_err(render_error)?;
    let ics = change.map(|c| change_ics(app, c, IcsMethod::Request, &recipients));
    let id = db::insert_message(
        &mut tx,
        &NewMessage {
            kind,
            change_id: change.map(|c| c.id),
            recipients: &recipients,
            subject: &r.subject,
            body_text: &r.text,
            body_html: &r.html,
            ics: ics.as_ref(),
        },
        &app.notifier.host,
        now,
    )
    .await?;
    tx.queued();
    tx.commit_bookkeeping(Bookkeeping::ScheduledNotice).await?;
    Ok(Some(id))
}

/// A message as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notice {
    pub id: i64,
    /// filed, receipt, approved, …, digest, reminder, calendar_missing
    pub kind: String,
    pub change_id: Option<i64>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message_id: String,
    /// pending | sending | sent | failed | dead
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// `email`, or `webhook` (then `webhook_id` names the subscription).
    pub channel: String,
    pub webhook_id: Option<i64>,
}

impl From<OutboxRow> for Notice {
    fn from(r: OutboxRow) -> Self {
        Notice {
            id: r.id,
            kind: r.kind,
            change_id: r.change_id,
            recipients: serde_json::from_str(&r.recipients).unwrap_or_default(),
            subject: r.subject,
            message_id: r.message_id,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            sent_at: r.sent_at,
            channel: r.channel,
            webhook_id: r.webhook_id,
        }
    }
}

pub const STATUSES: &[&str] = &["pending", "sending", "sent", "failed", "dead"];

/// Messages, newest first.
pub async fn list(app: &App, change_id: Option<i64>, status: Option<&str>) -> Result<Vec<Notice>> {
    if let Some(s) = status
        && !STATUSES.contains(&s)
    {
        return Err(Error::invalid(
            "invalid_status",
            format!(
                "status 须为 / status must be one of: {}",
                STATUSES.join(", ")
            ),
        ));
    }
    Ok(db::list(&app.db, change_id, status, 500)
        .await?
        .into_iter()
        .map(Notice::from)
        .collect())
}

/// A dead message back to the queue (audited, in one transaction).
pub async fn retry(app: &App, who: &Principal, id: i64) -> Result<Notice> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let status = db::status_for_update(&mut tx, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::NotFound {
                what: "notification",
            },
            other => other.into(),
        })?;
    if status != "dead" {
        return Err(Error::conflict(
            "not_dead",
            format!(
                "只有 dead 状态的通知可以重发（当前 {status}） / Only a dead notification can be retried (it is {status})"
            ),
        ));
    }
    db::requeue(&mut tx, id, now).await?;
    let entry = Entry::by(who, "notification.retry", format!("notification:{id}"))
        .with_details(json!({"from": "dead", "to": "pending"}));
    tx.commit(&entry, now).await?;
    Ok(db::get(&app.db, id).await?.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_event_has_a_title() {
        for e in crate::policy::NOTIFY_EVENTS {
            if !crate::policy::parties_of(e).contains(&"management") || *e == "emergency_also" {
                continue;
            }
            assert_ne!(super::event_title(e, "zh"), "通知", "{e}");
            assert_ne!(super::event_title(e, "en"), "notice", "{e}");
        }
    }
}
