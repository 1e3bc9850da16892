//! The change calendar for management: days with their working-day kind and the changes that
//! overlap them; and the personal iCalendar feed (RFC 5545).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use icalendar::{Component, EventLike, EventStatus};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::rules::{self, start_of_day};
use crate::App;
use crate::audit::Entry;
use crate::calendar::DayKind;
use crate::db::changes::{self as db, CalendarRow, ChangeRow};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::{Facts, Principal, Resource};

/// Longest range of `GET /api/v1/calendar`, in days.
pub const MAX_DAYS: i64 = 366;
/// Most changes one calendar answer carries.
const MAX_CHANGES: i64 = 20_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CalendarChange {
    pub id: i64,
    pub title: String,
    pub category: String,
    pub status: String,
    pub emergency: bool,
    pub systems: Vec<String>,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    /// Ids of open changes on a shared system with an overlapping window.
    pub conflicts: Vec<i64>,
    /// Still in progress after its planned end.
    pub overdue: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CalendarDay {
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// `null` when the year's calendar is not loaded.
    pub working: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub kind: Option<DayKind>,
    pub name: Option<String>,
    pub changes: Vec<CalendarChange>,
    /// Changes tools reported on this day with no approved change running (违规变更).
    pub unauthorized_changes: Vec<crate::db::gate::GateEvent>,
}

fn day_bounds(d: NaiveDate, tz: Tz) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start = start_of_day(d, tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight on {d}")))?;
    let next = d
        .succ_opt()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no day after {d}")))?;
    let end = start_of_day(next, tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight on {next}")))?;
    Ok((start, end))
}

/// Conflicts among `rows`: open changes sharing a system with overlapping windows.
fn conflicts_among(rows: &[(CalendarRow, Vec<String>)]) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut by_system: BTreeMap<&str, Vec<&CalendarRow>> = BTreeMap::new();
    for (row, systems) in rows {
        if rules::Status::parse(&row.status).is_some_and(|s| s.is_open()) {
            for s in systems {
                by_system.entry(s.as_str()).or_default().push(row);
            }
        }
    }
    let mut out: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for list in by_system.values_mut() {
        list.sort_by_key(|r| r.planned_start);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.planned_start >= a.planned_end {
                    break;
                }
                out.entry(a.id).or_default().insert(b.id);
                out.entry(b.id).or_default().insert(a.id);
            }
        }
    }
    out
}

/// One entry a day from `from` to `to` (inclusive).
pub async fn view(app: &App, from: NaiveDate, to: NaiveDate) -> Result<Vec<CalendarDay>> {
    if to < from || (to - from).num_days() >= MAX_DAYS {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: format!(
                "from ≤ to，且不超过 {MAX_DAYS} 天 / from must not be after to, at most {MAX_DAYS} days"
            ),
        });
    }
    let policy = &app.policies.change;
    let tz = policy.timezone;
    let (range_start, _) = day_bounds(from, tz)?;
    let (_, range_end) = day_bounds(to, tz)?;
    let rows = db::calendar_window(
        &app.db,
        range_start,
        range_end,
        range_start - TimeDelta::days(i64::from(policy.max_window_days)),
        MAX_CHANGES,
    )
    .await?;
    let rows: Vec<(CalendarRow, Vec<String>)> = rows
        .into_iter()
        .map(|r| {
            let systems = serde_json::from_str(&r.systems).unwrap_or_default();
            (r, systems)
        })
        .collect();
    let conflicts = conflicts_among(&rows);
    let calendar = app.calendar().await?;
    let now = app.now();
    let mut days = Vec::new();
    let mut bounds = Vec::new();
    let mut d = from;
    while d <= to {
        let info = calendar.day(d).ok();
        bounds.push(day_bounds(d, tz)?);
        days.push(CalendarDay {
            date: d,
            working: info.as_ref().map(|i| i.working),
            kind: info.as_ref().map(|i| i.kind),
            name: info.and_then(|i| i.name),
            changes: Vec::new(),
            unauthorized_changes: Vec::new(),
        });
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    // One pass: each change goes to the days its window overlaps (found by binary search over
    // the days' bounds), in start order as the rows come.
    for (r, systems) in rows {
        let first = bounds.partition_point(|(_, end)| *end <= r.planned_start);
        let last = bounds.partition_point(|(start, _)| *start < r.planned_end);
        if first >= last {
            continue;
        }
        let change = CalendarChange {
            overdue: super::views::is_overdue(&r.status, r.planned_end, now),
            conflicts: conflicts
                .get(&r.id)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            id: r.id,
            title: r.title,
            category: r.category,
            status: r.status,
            emergency: r.emergency,
            systems,
            planned_start: r.planned_start,
            planned_end: r.planned_end,
        };
        for day in &mut days[first..last - 1] {
            day.changes.push(change.clone());
        }
        days[last - 1].changes.push(change);
    }
    for e in crate::db::gate::between(&app.db, range_start, range_end, true).await? {
        let i = bounds.partition_point(|(_, end)| *end <= e.occurred_at);
        if let Some(day) = days.get_mut(i) {
            day.unauthorized_changes.push(e);
        }
    }
    Ok(days)
}

// ---------------------------------------------------------------- iCalendar feed

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Feed {
    /// Shown once; only its hash is stored.
    pub token: String,
    /// The address to subscribe to in Outlook or a phone calendar.
    pub url: String,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates or rotates the caller's feed token.
pub async fn create_feed(app: &App, who: &Principal) -> Result<Feed> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    db::set_feed(&mut tx, who.user_id, &hash_token(&token), now).await?;
    let entry = Entry::by(who, "calendar.feed_create", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    let url = format!(
        "{}/api/v1/calendar.ics?token={token}",
        app.settings.public_url()
    );
    Ok(Feed { token, url })
}

pub async fn revoke_feed(app: &App, who: &Principal) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if !db::delete_feed(&mut tx, who.user_id).await? {
        return Err(Error::NotFound {
            what: "calendar feed",
        });
    }
    let entry = Entry::by(who, "calendar.feed_revoke", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(())
}

fn bad_feed_token() -> Error {
    Error::Unauthenticated {
        code: "invalid_feed_token",
        message: "日历订阅链接无效或已撤销 / The calendar feed link is invalid or revoked".into(),
        subject: None,
    }
}

/// The feed of the user owning `token`: changes from 90 days ago to a year ahead.
pub async fn feed_ics(app: &App, token: &str) -> Result<String> {
    let user_id = db::feed_user(&app.db, &hash_token(token))
        .await?
        .ok_or_else(bad_feed_token)?;
    let now = app.now();
    let Some(principal) = crate::accounts::active_principal(app, user_id, now).await? else {
        return Err(bad_feed_token());
    };
    let may_read = app
        .policies
        .authorizer
        .decide(
            &principal,
            "calendar.read",
            &Resource::Api,
            &Facts::default(),
        )
        .allowed;
    if !may_read {
        return Err(bad_feed_token());
    }
    let policy = &app.policies.change;
    let rows = db::list_window(
        &app.db,
        now - TimeDelta::days(90),
        now + TimeDelta::days(366),
        now - TimeDelta::days(90 + i64::from(policy.max_window_days)),
        5000,
    )
    .await?;
    Ok(render_ics(
        &rows,
        policy.timezone,
        &app.settings.public_url(),
        |c| policy.categories.get(c).map(|c| c.title_zh.clone()),
        None,
    ))
}

/// RFC 5545 text: one VEVENT per change, times in the bank's zone, a stable UID per change.
/// Who an e-mailed invitation is from and to (RFC 5546: a `METHOD:REQUEST` names its
/// organizer and attendees); the feed has none.
pub struct Invitees<'a> {
    pub organizer: &'a str,
    pub attendees: &'a [String],
}

pub fn render_ics(
    rows: &[ChangeRow],
    tz: Tz,
    base_url: &str,
    title_of: impl Fn(&str) -> Option<String>,
    invitees: Option<&Invitees<'_>>,
) -> String {
    let mut cal = icalendar::Calendar::new();
    cal.name("changeguard 变更日历 / change calendar");
    cal.timezone(tz.name());
    for r in rows {
        let status = match r.status.as_str() {
            "submitted" => EventStatus::Tentative,
            "rejected" | "cancelled" | "expired" => EventStatus::Cancelled,
            _ => EventStatus::Confirmed,
        };
        let category = title_of(&r.category).unwrap_or_else(|| r.category.clone());
        let flag = if r.emergency { "【紧急】" } else { "" };
        let systems: Vec<String> = serde_json::from_str(&r.systems).unwrap_or_default();
        let description = format!(
            "状态 Status: {}\n风险 Risk: {}\n系统 Systems: {}\n申请人 Requester: {} ({})\n执行人 Assignee: {} ({})\n回退方案 Rollback: {}",
            super::words::both(super::words::status(&r.status)),
            super::words::both(super::words::risk(&r.risk)),
            systems.join(", "),
            r.requester_name,
            r.requester_username,
            r.assignee_name,
            r.assignee_username,
            r.rollback_plan
        );
        let sequence = (r.updated_at - r.created_at)
            .num_seconds()
            .clamp(0, i64::from(u32::MAX)) as u32;
        let mut event = icalendar::Event::new();
        if let Some(to) = invitees {
            event.add_property("ORGANIZER", format!("mailto:{}", to.organizer));
            for a in to.attendees {
                let mut p = icalendar::Property::new("ATTENDEE", format!("mailto:{a}"));
                p.add_parameter("ROLE", "REQ-PARTICIPANT");
                p.add_parameter("RSVP", "FALSE");
                event.append_multi_property(p);
            }
        }
        let event = event
            .uid(&format!("change-{}@changeguard", r.id))
            .summary(&ics_text(&format!("{flag}[{category}] {}", r.title)))
            .description(&ics_text(&description))
            .starts((r.planned_start.with_timezone(&tz).naive_local(), tz))
            .ends((r.planned_end.with_timezone(&tz).naive_local(), tz))
            .status(status)
            .sequence(sequence)
            .timestamp(r.updated_at)
            .url(&format!("{base_url}/console/changes/{}", r.id))
            .done();
        cal.push(event);
    }
    let text = cal.done().to_string();
    with_vtimezone(&text, tz)
}

/// Text as an iCalendar TEXT value may hold it (RFC 5545 §3.3.11: no control character but
/// HTAB; line breaks are escaped by the writer): CRLF line ends become line feeds, and any other
/// control character (input refuses them, but rows older than that check may hold one) is left
/// out, so no stored text can end a content line or start a property of its own.
fn ics_text(s: &str) -> String {
    s.replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// Adds the VTIMEZONE that RFC 5545 requires for the TZID used (the zone's current offset;
/// China has kept +08:00 without daylight saving since 1991).
fn with_vtimezone(ics: &str, tz: Tz) -> String {
    use chrono::Offset;
    let offset = Utc::now()
        .with_timezone(&tz)
        .offset()
        .fix()
        .local_minus_utc();
    let sign = if offset < 0 { '-' } else { '+' };
    let hhmm = format!(
        "{sign}{:02}{:02}",
        offset.abs() / 3600,
        offset.abs() % 3600 / 60
    );
    let block = format!(
        "BEGIN:VTIMEZONE\r\nTZID:{}\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:{hhmm}\r\nTZOFFSETTO:{hhmm}\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n",
        tz.name()
    );
    match ics.find("BEGIN:VEVENT") {
        Some(i) => format!("{}{}{}", &ics[..i], block, &ics[i..]),
        None => ics.replacen("END:VCALENDAR", &format!("{block}END:VCALENDAR"), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::ics_text;

    #[test]
    fn calendar_text_holds_no_control_character_but_line_feeds_and_tabs() {
        assert_eq!(
            ics_text("回退：\r\n1. 停服\r\n\t2. 还原"),
            "回退：\n1. 停服\n\t2. 还原"
        );
        assert_eq!(
            ics_text("a\rMETHOD:CANCEL\u{7}\u{1b}[0m"),
            "aMETHOD:CANCEL[0m"
        );
        assert_eq!(ics_text("普通文字 plain"), "普通文字 plain");
    }
}
