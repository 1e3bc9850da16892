//! The admission rule, free of the database and the clock: given the open changes of a system
//! and the freeze windows, may a tool act on the system now?

use chrono::{DateTime, Utc};

use crate::changes::rules::Status;
use crate::policy::FreezeWindow;

/// An open change of the system, as far as the rule needs it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub status: Status,
    pub category: String,
    pub action: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub emergency: bool,
}

/// What the tool asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub category: Option<&'a str>,
    pub action: Option<&'a str>,
    pub change_id: Option<i64>,
}

/// Why the gate stays shut, closest to passing first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Approved, started, in its window, but a freeze window covers now.
    Frozen {
        id: i64,
        window: String,
        until: DateTime<Utc>,
    },
    /// Running, but now is outside its planned window.
    OutsideWindow {
        id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Approved but not yet started (`POST /changes/{id}/start`).
    NotStarted { id: i64, start: DateTime<Utc> },
    /// Not yet approved.
    NotApproved { id: i64 },
    /// Of the category asked for, but not of the action.
    WrongAction { id: i64, action: Option<String> },
    /// An open change of another category.
    WrongCategory { id: i64, category: String },
    /// No open change on this system (or not the one named).
    NoOpenChange,
}

impl Refusal {
    /// The stable code of the 403 problem document.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Frozen { .. } => "freeze_window",
            Refusal::OutsideWindow { .. } => "outside_window",
            Refusal::NotStarted { .. } => "change_not_started",
            Refusal::NotApproved { .. } => "change_not_approved",
            Refusal::WrongAction { .. } => "wrong_action",
            Refusal::WrongCategory { .. } => "wrong_category",
            Refusal::NoOpenChange => "no_open_change",
        }
    }

    /// The change the refusal is about, if any.
    pub fn change_id(&self) -> Option<i64> {
        match self {
            Refusal::Frozen { id, .. }
            | Refusal::OutsideWindow { id, .. }
            | Refusal::NotStarted { id, .. }
            | Refusal::NotApproved { id }
            | Refusal::WrongAction { id, .. }
            | Refusal::WrongCategory { id, .. } => Some(*id),
            Refusal::NoOpenChange => None,
        }
    }
}

/// The freeze window holding `now` for `category`, unless the change is an emergency
/// (approved emergencies run inside freezes, as they may be filed inside them).
pub fn freeze_at<'a>(
    freezes: &'a [FreezeWindow],
    category: &str,
    now: DateTime<Utc>,
) -> Option<&'a FreezeWindow> {
    freezes.iter().find(|w| {
        (w.categories.is_empty() || w.categories.iter().any(|c| c == category))
            && w.start.with_timezone(&Utc) <= now
            && now < w.end.with_timezone(&Utc)
    })
}

fn verdict(
    c: &Candidate,
    ask: &Ask<'_>,
    freezes: &[FreezeWindow],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    if ask.category.is_some_and(|k| k != c.category) {
        return Err(Refusal::WrongCategory {
            id: c.id,
            category: c.category.clone(),
        });
    }
    if ask.action.is_some() && ask.action != c.action.as_deref() {
        return Err(Refusal::WrongAction {
            id: c.id,
            action: c.action.clone(),
        });
    }
    match c.status {
        Status::InProgress => {}
        Status::Approved => {
            return Err(Refusal::NotStarted {
                id: c.id,
                start: c.start,
            });
        }
        _ => return Err(Refusal::NotApproved { id: c.id }),
    }
    if now < c.start || now >= c.end {
        return Err(Refusal::OutsideWindow {
            id: c.id,
            start: c.start,
            end: c.end,
        });
    }
    if !c.emergency
        && let Some(w) = freeze_at(freezes, &c.category, now)
    {
        return Err(Refusal::Frozen {
            id: c.id,
            window: w.name.clone(),
            until: w.end.with_timezone(&Utc),
        });
    }
    Ok(())
}

/// The change that admits the tool now, or the refusal closest to passing.
pub fn decide<'a>(
    candidates: &'a [Candidate],
    ask: &Ask<'_>,
    freezes: &[FreezeWindow],
    now: DateTime<Utc>,
) -> Result<&'a Candidate, Refusal> {
    let mut best = Refusal::NoOpenChange;
    for c in candidates {
        if ask.change_id.is_some_and(|id| id != c.id) {
            continue;
        }
        match verdict(c, ask, freezes, now) {
            Ok(()) => return Ok(c),
            Err(r) => best = best.min(r),
        }
    }
    Err(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 10, h, 0, 0).unwrap()
    }

    fn change(id: i64, status: Status) -> Candidate {
        Candidate {
            id,
            status,
            category: "upgrade".into(),
            action: Some("software".into()),
            start: t(10),
            end: t(12),
            emergency: false,
        }
    }

    fn freeze(from: u32, to: u32) -> FreezeWindow {
        let tz = chrono::FixedOffset::east_opt(0).unwrap();
        FreezeWindow {
            name: "年终封网".into(),
            start: t(from).with_timezone(&tz),
            end: t(to).with_timezone(&tz),
            categories: vec![],
        }
    }

    #[test]
    fn only_a_running_change_inside_its_window_admits() {
        let ask = Ask::default();
        let running = [change(1, Status::InProgress)];
        assert_eq!(decide(&running, &ask, &[], t(11)).unwrap().id, 1);
        assert_eq!(
            decide(&running, &ask, &[], t(9)).unwrap_err().code(),
            "outside_window"
        );
        assert_eq!(
            decide(&running, &ask, &[], t(12)).unwrap_err().code(),
            "outside_window",
            "the end is outside"
        );
        let approved = [change(1, Status::Approved)];
        assert_eq!(
            decide(&approved, &ask, &[], t(11)).unwrap_err().code(),
            "change_not_started"
        );
        let filed = [change(1, Status::Submitted)];
        assert_eq!(
            decide(&filed, &ask, &[], t(11)).unwrap_err().code(),
            "change_not_approved"
        );
        assert_eq!(
            decide(&[], &ask, &[], t(11)).unwrap_err(),
            Refusal::NoOpenChange
        );
    }

    #[test]
    fn category_action_and_named_change_must_match() {
        let running = [change(1, Status::InProgress)];
        let at = t(11);
        let ask = |category, action, change_id| Ask {
            category,
            action,
            change_id,
        };
        assert!(
            decide(
                &running,
                &ask(Some("upgrade"), Some("software"), Some(1)),
                &[],
                at
            )
            .is_ok()
        );
        assert_eq!(
            decide(&running, &ask(Some("debugging"), None, None), &[], at)
                .unwrap_err()
                .code(),
            "wrong_category"
        );
        assert_eq!(
            decide(
                &running,
                &ask(Some("upgrade"), Some("hardware"), None),
                &[],
                at
            )
            .unwrap_err()
            .code(),
            "wrong_action"
        );
        assert_eq!(
            decide(&running, &ask(None, None, Some(2)), &[], at).unwrap_err(),
            Refusal::NoOpenChange
        );
    }

    #[test]
    fn a_freeze_shuts_the_gate_except_for_an_emergency() {
        let ask = Ask::default();
        let mut running = [change(1, Status::InProgress)];
        let freezes = [freeze(11, 13)];
        assert_eq!(decide(&running, &ask, &freezes, t(10)).unwrap().id, 1);
        assert_eq!(
            decide(&running, &ask, &freezes, t(11)).unwrap_err().code(),
            "freeze_window"
        );
        running[0].emergency = true;
        assert!(decide(&running, &ask, &freezes, t(11)).is_ok());
    }

    #[test]
    fn the_refusal_closest_to_passing_is_told() {
        let ask = Ask::default();
        let changes = [
            change(1, Status::Submitted),
            change(2, Status::Approved),
            Candidate {
                start: t(13),
                end: t(14),
                ..change(3, Status::InProgress)
            },
        ];
        let r = decide(&changes, &ask, &[], t(11)).unwrap_err();
        assert_eq!(r.code(), "outside_window");
        assert_eq!(r.change_id(), Some(3));
    }
}
