//! Scheduled jobs (`[schedules]` in policies/notifications.toml, cron in the bank's time zone):
//! the morning digest, the reminder before a change starts, expiry of approved changes never
//! started, the warning while next year's calendar is missing, "rotate after use" reminders, and
//! the reminders and escalations of approval stages waiting too long.
//!
//! Each slot runs once across all instances: whoever inserts `(job, slot)` into `job_runs`
//! first runs it. At each tick only the LATEST slot due is considered, so a slot missed while
//! the service was down runs once when it is back, if it is still useful (see [`Job::useful`]).
//! The scheduler takes `now` as an argument: tests drive it; the binary passes the system clock.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::json;

use crate::App;
use crate::db::changes::{self as change_db, ChangeFilter, ChangeRow};
use crate::db::notify as db;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Digest,
    Reminder,
    Expiry,
    CalendarWarning,
    RotationReminder,
    AuditVerify,
    ApprovalNudge,
    DirectorySync,
}

impl Job {
    pub const ALL: [Job; 8] = [
        Job::Digest,
        Job::Reminder,
        Job::Expiry,
        Job::CalendarWarning,
        Job::RotationReminder,
        Job::AuditVerify,
        Job::ApprovalNudge,
        Job::DirectorySync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::Digest => "digest",
            Job::Reminder => "reminder",
            Job::Expiry => "expiry",
            Job::CalendarWarning => "calendar_warning",
            Job::RotationReminder => "rotation_reminder",
            Job::AuditVerify => "audit_verify",
            Job::ApprovalNudge => "approval_nudge",
            Job::DirectorySync => "directory_sync",
        }
    }

    fn expr(self, app: &App) -> &str {
        let s = &app.policies.notifications.schedules;
        match self {
            Job::Digest => &s.digest,
            Job::Reminder => &s.reminder,
            Job::Expiry => &s.expiry,
            Job::CalendarWarning => &s.calendar_warning,
            Job::RotationReminder => &s.rotation_reminder,
            Job::AuditVerify => &s.audit_verify,
            Job::ApprovalNudge => &s.approval_nudge,
            Job::DirectorySync => &app.policies.directory.sync_schedule,
        }
    }

    /// Whether a slot is still worth running at `now`: a digest or a reminder only on its own
    /// day (a digest at 15:00 still beats none; tomorrow's will come), the warning within its
    /// week, expiry always.
    fn useful(self, slot: DateTime<Tz>, now: DateTime<Tz>) -> bool {
        match self {
            Job::Digest | Job::Reminder | Job::RotationReminder | Job::AuditVerify => {
                slot.date_naive() == now.date_naive()
            }
            Job::CalendarWarning => now - slot < chrono::Duration::days(7),
            Job::Expiry | Job::ApprovalNudge | Job::DirectorySync => true,
        }
    }
}

/// The latest slot of `expr` at or before `now`, looking back at most 8 days.
pub fn latest_slot(expr: &str, now: DateTime<Tz>) -> Option<DateTime<Tz>> {
    let schedule = cron::Schedule::from_str(expr).ok()?;
    let from = now - chrono::Duration::days(8);
    schedule.after(&from).take_while(|t| *t <= now).last()
}

/// What one tick did: the jobs run, by name and slot.
#[derive(Debug, Default)]
pub struct Ran(pub Vec<(&'static str, String)>);

/// Runs every job whose latest slot at `now` is due, useful, and not yet run by anyone.
pub async fn tick(app: &App, now: DateTime<Utc>) -> Result<Ran> {
    let tz = app.policies.change.timezone;
    let local_now = now.with_timezone(&tz);
    let mut ran = Ran::default();
    for job in Job::ALL {
        let Some(slot) = latest_slot(job.expr(app), local_now) else {
            continue;
        };
        if !job.useful(slot, local_now) || (job == Job::DirectorySync && app.directory.is_none()) {
            continue;
        }
        let slot_s = slot.to_rfc3339();
        if !db::claim_slot(&app.db, job.name(), &slot_s, now).await? {
            continue;
        }
        let r = match job {
            Job::Digest => digest(app, slot.date_naive(), now).await.map(|_| ()),
            Job::Reminder => reminder(app, slot.date_naive(), now).await.map(|_| ()),
            Job::Expiry => {
                // The runs table would grow by a row a minute: keep 30 days (the longest
                // look-back is 8 days).
                db::prune_runs(&app.db, now - chrono::Duration::days(30)).await?;
                crate::db::users::prune_logins(
                    &app.db,
                    now - chrono::Duration::days(1),
                    now - chrono::Duration::days(crate::auth::KNOWN_ADDRESS_DAYS),
                )
                .await?;
                let (revoked, failing) = crate::dbaccess::revoke_due(app, now).await?;
                if revoked > 0 || failing > 0 {
                    tracing::info!(revoked, failing, "just-in-time database accounts revoked");
                }
                if let Err(e) = crate::db::password_resets::lapse_due(&app.db, now).await {
                    tracing::error!(error = %e, "lapsed password resets could not be dropped; the job retries");
                }
                let rotated = crate::vault::machine::rotate_due(app, None, now).await?;
                if rotated > 0 {
                    tracing::info!(rotated, "credentials rotated on their database targets");
                }
                let late = crate::changes::notify_overdue_at(app, now).await?;
                if late > 0 {
                    tracing::info!(overdue = late, "overdue changes told");
                }
                crate::changes::expire_overdue_at(app, now).await.map(|n| {
                    if n > 0 {
                        tracing::info!(expired = n, "changes expired");
                    }
                })
            }
            Job::CalendarWarning => calendar_warning(app, slot.date_naive(), now)
                .await
                .map(|_| ()),
            Job::RotationReminder => rotation_reminder(app, slot.date_naive(), now)
                .await
                .map(|_| ()),
            Job::AuditVerify => audit_verify(app, now).await.map(|_| ()),
            Job::DirectorySync => crate::directory::sync::run(app, now).await.map(|s| {
                if !s.disabled.is_empty() || !s.roles_removed.is_empty() {
                    tracing::info!(
                        disabled = s.disabled.len(),
                        roles_removed = s.roles_removed.len(),
                        "directory sync"
                    );
                }
            }),
            Job::ApprovalNudge => crate::changes::nudge_waiting(app, now).await.map(|n| {
                if n > 0 {
                    tracing::info!(sent = n, "approval stages reminded or escalated");
                }
            }),
        };
        if let Err(e) = r {
            // The slot stays claimed: the next slot tries again (expiry runs every minute).
            tracing::warn!(job = job.name(), slot = %slot_s, error = %e, "scheduled job failed");
        }
        ran.0.push((job.name(), slot_s));
    }
    Ok(ran)
}

/// Runs [`tick`] with the system clock every 15 seconds until the process ends.
pub fn spawn(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(15));
        loop {
            every.tick().await;
            if let Err(e) = tick(&app, app.now()).await {
                tracing::warn!(error = %e, "scheduler tick failed; will retry");
            }
        }
    })
}

fn start_of(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&naive)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&naive), |t| t.with_timezone(&Utc))
}

/// The first `n` working days from `from` (inclusive).
fn working_days(
    cal: &crate::calendar::WorkingCalendar,
    from: NaiveDate,
    n: u32,
) -> Result<Vec<NaiveDate>> {
    let mut out = Vec::new();
    let mut d = from;
    while out.len() < n as usize {
        if cal.is_working(d).map_err(crate::changes::calendar_error)? {
            out.push(d);
        }
        d = d
            .succ_opt()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("date overflow")))?;
    }
    Ok(out)
}

fn open(r: &ChangeRow) -> bool {
    matches!(r.status.as_str(), "submitted" | "approved" | "in_progress")
}

/// The changes the digest of `today` lists: open changes whose windows overlap today and the
/// following working days, `digest_working_days` working days in all (today included).
/// `None` on a day off (no digest).
pub async fn digest_changes(
    app: &App,
    today: NaiveDate,
) -> Result<Option<(NaiveDate, Vec<ChangeRow>)>> {
    let cal = app.calendar().await?;
    if !cal
        .is_working(today)
        .map_err(crate::changes::calendar_error)?
    {
        return Ok(None);
    }
    let days = app.policies.notifications.schedules.digest_working_days;
    let last = *working_days(&cal, today, days)?
        .last()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no working days")))?;
    let tz = app.policies.change.timezone;
    let end = start_of(last.succ_opt().unwrap_or(last), tz);
    let rows = change_db::list_changes(
        &app.db,
        &ChangeFilter {
            from: Some(start_of(today, tz)),
            to: Some(end),
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    Ok(Some((last, rows.into_iter().filter(open).collect())))
}

async fn digest(app: &App, today: NaiveDate, now: DateTime<Utc>) -> Result<Option<i64>> {
    let Some((last, rows)) = digest_changes(app, today).await? else {
        return Ok(None);
    };
    let tz = app.policies.change.timezone;
    let changes: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "title": r.title, "emergency": r.emergency,
                "status": super::words_of(app, crate::changes::words::status(&r.status)),
                "planned_start": super::local(r.planned_start, tz),
                "planned_end": super::local(r.planned_end, tz),
                "systems": serde_json::from_str::<Vec<String>>(&r.systems).unwrap_or_default(),
                "assignee": format!("{} ({})", r.assignee_name, r.assignee_username),
                "link": super::change_link(app, r.id),
            })
        })
        .collect();
    // The latest audit checkpoint, so the head of the trail is witnessed off the machine too.
    let checkpoint =
        crate::audit::checkpoint::latest(&app.checkpoints.path, &app.checkpoints.signer.verifier())
            .map(|c| {
                let at = DateTime::parse_from_rfc3339(&c.at)
                    .map(|t| super::local(t.with_timezone(&Utc), tz))
                    .unwrap_or_else(|_| c.at.clone());
                json!({"seq": c.seq, "mac": c.short_mac(), "at": at})
            });
    let ctx = json!({
        "days": app.policies.notifications.schedules.digest_working_days,
        "from": today.to_string(), "to": last.to_string(), "timezone": tz.name(),
        "changes": changes, "checkpoint": checkpoint,
    });
    super::enqueue_other(app, "digest", "digest", &ctx, None, now).await
}

/// Approved changes starting after `today` and no later than the end of the next working day
/// (so Friday's reminder covers a Saturday, Sunday or Monday start). `None` on a day off.
pub async fn reminder_changes(app: &App, today: NaiveDate) -> Result<Option<Vec<ChangeRow>>> {
    let cal = app.calendar().await?;
    if !cal
        .is_working(today)
        .map_err(crate::changes::calendar_error)?
    {
        return Ok(None);
    }
    let tomorrow = today.succ_opt().unwrap_or(today);
    let next = working_days(&cal, tomorrow, 1)?
        .first()
        .copied()
        .unwrap_or(tomorrow);
    let tz = app.policies.change.timezone;
    let rows = change_db::list_changes(
        &app.db,
        &ChangeFilter {
            status: Some("approved"),
            start_after: Some(start_of(tomorrow, tz)),
            to: Some(start_of(next.succ_opt().unwrap_or(next), tz)),
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    Ok(Some(rows))
}

async fn reminder(app: &App, today: NaiveDate, now: DateTime<Utc>) -> Result<usize> {
    let Some(rows) = reminder_changes(app, today).await? else {
        return Ok(0);
    };
    let lang = app.notifier.templates.language.clone();
    let mut n = 0;
    for r in &rows {
        let ctx = json!({
            "event": "reminder",
            "event_title": super::event_title("reminder", &lang),
            "change": super::change_ctx(app, r),
            "comment": null,
            "timezone": app.policies.change.timezone.name(),
            "link": super::change_link(app, r.id),
        });
        if super::enqueue_other(app, "reminder", "change", &ctx, Some(r), now)
            .await?
            .is_some()
        {
            n += 1;
        }
    }
    Ok(n)
}

/// On working days: "rotate after use" to whoever revealed a secret for a change, until rotated.
async fn rotation_reminder(app: &App, today: NaiveDate, now: DateTime<Utc>) -> Result<usize> {
    let working = app
        .calendar()
        .await?
        .is_working(today)
        .map_err(crate::changes::calendar_error)?;
    if !working {
        return Ok(0);
    }
    crate::vault::remind_rotation(app, now).await
}

/// Walks the whole audit chain and compares it with the checkpoint file. Intact: a signed
/// checkpoint of the head is appended to the file, logged, and the gauge
/// `changeguard_audit_chain_intact` is 1. Broken: the gauge is 0, an error is logged, the
/// finding is appended to the trail and e-mailed (`audit_broken`); no checkpoint. Ok(true):
/// intact.
async fn audit_verify(app: &App, now: DateTime<Utc>) -> Result<bool> {
    use crate::audit::checkpoint::CheckpointError;
    let v = match app.checkpoints.write(&app.db, &app.sealer, now).await {
        Ok((c, v)) => {
            metrics::gauge!("changeguard_audit_chain_intact").set(1.0);
            tracing::info!(
                entries = v.entries,
                checkpoints = v.checkpoints,
                checkpoint_seq = c.seq,
                checkpoint_mac = %c.mac,
                file = %app.checkpoints.path.display(),
                "audit chain verified: intact; checkpoint written"
            );
            return Ok(true);
        }
        Err(CheckpointError::Broken(v)) => *v,
        Err(CheckpointError::Io { path, source }) => {
            // The chain verified, but its witness could not be written: the job failed.
            metrics::gauge!("changeguard_audit_chain_intact").set(1.0);
            return Err(Error::Internal(anyhow::anyhow!(
                "audit checkpoint file {}: {source}",
                path.display()
            )));
        }
        Err(CheckpointError::Store(e)) => return Err(e.into()),
    };
    metrics::gauge!("changeguard_audit_chain_intact").set(0.0);
    let mut entry =
        crate::audit::Entry::ok(None, "audit.verify_scheduled", "audit_log".to_string())
            .with_details(json!({
                "ok": v.ok, "entries": v.entries, "first_bad_entry": v.first_bad_entry,
                "checkpoints": v.checkpoints,
                "findings": v.findings.iter().map(|f| &f.code).collect::<Vec<_>>(),
            }));
    let first_bad = v
        .first_bad_entry
        .map_or_else(|| "—".to_string(), |n| n.to_string());
    tracing::error!(entries = v.entries, first_bad_entry = %first_bad, reason = ?v.reason, "AUDIT CHAIN BROKEN");
    entry.code = Some("audit_chain_broken".into());
    entry.reason = v.reason.clone();
    let bulletin = super::Bulletin::new(
        app,
        "审计轨迹校验失败：记录可能被篡改",
        "Audit trail verification failed: entries may have been tampered with",
    )
    .fact(app, "首个异常记录", "First bad entry", &first_bad)
    .fact(app, "已校验记录数", "Entries checked", v.entries)
    .fact(app, "原因", "Reason", v.reason.as_deref().unwrap_or("—"))
    .link(app, "/console/audit");
    let tx = crate::deed::Deed::open(app).await?;
    if let Err(e) = super::commit_with_bulletin(
        app,
        tx,
        ("audit_broken", super::Parties::default(), &bulletin),
        &entry,
        now,
    )
    .await
    {
        // A trail whose head was moved back refuses every append (the next seq is taken): the
        // finding cannot enter it, but the people who must hear of it still do.
        tracing::error!(error = %e, "the audit finding could not be appended to the trail; e-mailing it alone");
        let mut tx = crate::deed::Deed::open(app).await?;
        super::enqueue_bulletin(
            app,
            &mut tx,
            "audit_broken",
            super::Parties::default(),
            &bulletin,
            now,
        )
        .await?;
        tx.commit_bookkeeping(crate::deed::Bookkeeping::ScheduledNotice)
            .await?;
    }
    Ok(false)
}

/// From 1 November: next year's calendar missing → a warning to the admins.
async fn calendar_warning(app: &App, today: NaiveDate, now: DateTime<Utc>) -> Result<Option<i64>> {
    let next = today.year() + 1;
    if today.month() < 11 || app.calendar().await?.has_year(next) {
        return Ok(None);
    }
    super::enqueue_other(
        app,
        "calendar_missing",
        "calendar_missing",
        &json!({"year": next}),
        None,
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Tz> {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Shanghai)
    }

    #[test]
    fn latest_slot_is_the_last_one_due() {
        let s = latest_slot("0 30 8 * * *", at("2026-12-01T08:29:59+08:00")).unwrap();
        assert_eq!(s, at("2026-11-30T08:30:00+08:00"));
        let s = latest_slot("0 30 8 * * *", at("2026-12-01T08:30:00+08:00")).unwrap();
        assert_eq!(s, at("2026-12-01T08:30:00+08:00"));
        // Down for three days: only the latest missed slot.
        let s = latest_slot("0 30 8 * * *", at("2026-12-04T10:00:00+08:00")).unwrap();
        assert_eq!(s, at("2026-12-04T08:30:00+08:00"));
        let s = latest_slot("0 0 9 * * Mon", at("2026-12-03T10:00:00+08:00")).unwrap();
        assert_eq!(s, at("2026-11-30T09:00:00+08:00"));
    }

    #[test]
    fn a_missed_digest_is_useful_only_on_its_day() {
        let slot = at("2026-12-01T08:30:00+08:00");
        assert!(Job::Digest.useful(slot, at("2026-12-01T15:00:00+08:00")));
        assert!(!Job::Digest.useful(slot, at("2026-12-02T08:00:00+08:00")));
        assert!(Job::Expiry.useful(slot, at("2026-12-09T08:00:00+08:00")));
    }
}
