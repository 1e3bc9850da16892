//! How a change request is shown.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::approval::ApprovalView;
use crate::db::changes::{ChangeRow, Conflict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserRef {
    pub id: i64,
    pub username: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    pub id: i64,
    pub title: String,
    pub category: String,
    pub action: Option<String>,
    pub systems: Vec<String>,
    pub description: String,
    pub impact: Option<String>,
    pub risk: String,
    pub rollback_plan: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub requester: UserRef,
    pub assignee: UserRef,
    pub emergency: bool,
    pub justification: Option<String>,
    /// submitted, approved, rejected, in_progress, completed, cancelled, expired
    pub status: String,
    /// When the notice was recorded (server clock).
    pub notified_at: DateTime<Utc>,
    /// The notice date in the bank's time zone.
    #[schema(value_type = String, format = Date)]
    pub notified_on: NaiveDate,
    /// The earliest permitted start (00:00 bank time) for that notice.
    #[schema(value_type = Option<String>, format = Date)]
    pub earliest_start: Option<NaiveDate>,
    /// Who approved the last stage (null for a standard change, approved by its template).
    pub approved_by: Option<i64>,
    pub approved_at: Option<DateTime<Utc>>,
    /// The approval stages of the current round (分级审批), with their decisions.
    pub approval: ApprovalView,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub completion_notes: Option<String>,
    pub review_notes: Option<String>,
    pub reviewed_by: Option<i64>,
    pub reviewed_at: Option<DateTime<Utc>>,
    /// A completed emergency change still waiting for its post-implementation review.
    pub review_pending: bool,
    /// Still in progress after its planned end: it reveals nothing and gets no database
    /// account until it is completed or rescheduled.
    pub overdue: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Open changes on a shared system whose windows overlap this one.
    pub conflicts: Vec<Conflict>,
}

impl ChangeView {
    pub fn from_row(
        r: ChangeRow,
        conflicts: Vec<Conflict>,
        approval: ApprovalView,
        now: DateTime<Utc>,
    ) -> ChangeView {
        let review_pending = r.emergency && r.status == "completed" && r.reviewed_at.is_none();
        let overdue = is_overdue(&r.status, r.planned_end, now);
        ChangeView {
            id: r.id,
            title: r.title,
            category: r.category,
            action: r.action,
            systems: serde_json::from_str(&r.systems).unwrap_or_default(),
            description: r.description,
            impact: r.impact,
            risk: r.risk,
            rollback_plan: r.rollback_plan,
            planned_start: r.planned_start,
            planned_end: r.planned_end,
            requester: UserRef {
                id: r.requester_id,
                username: r.requester_username,
                display_name: r.requester_name,
            },
            assignee: UserRef {
                id: r.assignee_id,
                username: r.assignee_username,
                display_name: r.assignee_name,
            },
            emergency: r.emergency,
            justification: r.justification,
            status: r.status,
            notified_at: r.notified_at,
            notified_on: r.notified_on.parse().unwrap_or_default(),
            earliest_start: r.earliest_start.and_then(|d| d.parse().ok()),
            approved_by: r.approved_by,
            approved_at: r.approved_at,
            approval,
            started_at: r.started_at,
            completed_at: r.completed_at,
            outcome: r.outcome,
            completion_notes: r.completion_notes,
            review_notes: r.review_notes,
            reviewed_by: r.reviewed_by,
            reviewed_at: r.reviewed_at,
            review_pending,
            overdue,
            created_at: r.created_at,
            updated_at: r.updated_at,
            conflicts,
        }
    }
}

/// A change still in progress after its planned end.
pub fn is_overdue(status: &str, planned_end: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    status == "in_progress" && now >= planned_end
}
