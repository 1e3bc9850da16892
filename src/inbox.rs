//! 待我处理 / What waits for one person: the approvals of their stage, the changes they may
//! start today, the reviews after emergencies, the credentials they must rotate, and the
//! second-person approvals (standing grants, disclosures, privileged roles) they may give.
//!
//! Each item is asked by the same predicate the deed itself checks (`steps_allowed`, Cedar,
//! `assets::approval_of`), so the inbox never lists what the server would refuse.

use chrono::{DateTime, Utc};

use crate::App;
use crate::accounts::requests as role_requests;
use crate::changes::rules::{Status, start_of_day};
use crate::changes::{self, ChangeView};
use crate::db::assets::Disclosure;
use crate::db::changes::ChangeFilter;
use crate::db::role_requests::{RequestStatus, RoleRequest};
use crate::db::vault::CredentialGrant;
use crate::error::Result;
use crate::rbac::{Facts, Principal, Resource};
use crate::vault::CredentialView;

/// The most items of one kind looked at (an inbox is a to-do list, not a report).
const LOOK_AT: i64 = 200;

#[derive(Debug, Default)]
pub struct Inbox {
    /// Changes at a stage the person may approve now.
    pub approvals: Vec<ChangeView>,
    /// Approved changes whose window opens by the end of today, which the person may start.
    pub to_start: Vec<ChangeView>,
    /// Completed emergency changes waiting for the person's post-implementation review.
    pub reviews: Vec<ChangeView>,
    /// Credentials the person revealed for a change and must now rotate.
    pub rotations: Vec<CredentialView>,
    /// Standing grants waiting for a second person, which the person may approve.
    pub grants: Vec<CredentialGrant>,
    /// Disclosure requests (Art. 21) the person may approve.
    pub disclosures: Vec<Disclosure>,
    /// Privileged role grants waiting for a second person, which the person may approve.
    pub role_requests: Vec<RoleRequest>,
}

impl Inbox {
    pub fn count(&self) -> usize {
        self.approvals.len()
            + self.to_start.len()
            + self.reviews.len()
            + self.rotations.len()
            + self.grants.len()
            + self.disclosures.len()
            + self.role_requests.len()
    }
}

fn may(app: &App, who: &Principal, permission: &str) -> bool {
    app.policies
        .authorizer
        .decide(who, permission, &Resource::Api, &Facts::default())
        .allowed
}

/// What waits for `who` at `now`.
pub async fn of(app: &App, who: &Principal, now: DateTime<Utc>) -> Result<Inbox> {
    let mut inbox = Inbox::default();
    if may(app, who, "change.read") {
        changes_of(app, who, now, &mut inbox).await?;
    }
    inbox.rotations = crate::vault::reminders(app, who.user_id).await?;
    // Each second-person approval is listed only to those who may also read what it is about.
    if may(app, who, "credential.grant_approve") && may(app, who, "credential.read") {
        inbox.grants = crate::db::vault::awaiting_approval(&app.db, now, LOOK_AT)
            .await?
            .into_iter()
            .filter(|g| g.grantee_id != who.user_id && g.granted_by != who.user_id)
            .collect();
    }
    if may(app, who, "disclosure.approve") && may(app, who, "asset.read") {
        inbox.disclosures = crate::db::assets::undecided_disclosures(&app.db, LOOK_AT)
            .await?
            .into_iter()
            .filter(|d| crate::assets::approval_of(who, d).is_ok())
            .collect();
    }
    if may(app, who, "role.grant") && may(app, who, "user.read") {
        for r in role_requests::list(app, Some(RequestStatus::Pending)).await? {
            if may_approve_role(app, who, &r, now).await? {
                inbox.role_requests.push(r);
            }
        }
    }
    Ok(inbox)
}

async fn changes_of(
    app: &App,
    who: &Principal,
    now: DateTime<Utc>,
    inbox: &mut Inbox,
) -> Result<()> {
    let tz = app.policies.change.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let end_of_today = today.succ_opt().and_then(|d| start_of_day(d, tz));
    // Each list is read only for those who hold the permission its step needs (the stage
    // rules read the database for every change asked about).
    let approves = may(app, who, "change.approve") || may(app, who, "change.approve_emergency");
    let lists = [
        (approves, Status::Submitted, None, "approve"),
        (
            may(app, who, "change.execute"),
            Status::Approved,
            end_of_today,
            "start",
        ),
        (
            may(app, who, "change.approve_emergency"),
            Status::Completed,
            None,
            "review",
        ),
    ];
    for (asked, status, to, step) in lists {
        if !asked {
            continue;
        }
        let filter = ChangeFilter {
            status: Some(status.as_str()),
            to,
            emergency: (step == "review").then_some(true),
            sort: if step == "review" {
                crate::db::changes::ChangeOrder::Updated
            } else {
                crate::db::changes::ChangeOrder::Start
            },
            limit: LOOK_AT,
            ..Default::default()
        };
        for c in changes::list(app, &filter).await? {
            if (step != "review" || c.review_pending)
                && changes::steps_allowed(app, who, &c).await?.contains(&step)
            {
                match step {
                    "approve" => inbox.approvals.push(c),
                    "start" => inbox.to_start.push(c),
                    _ => inbox.reviews.push(c),
                }
            }
        }
    }
    Ok(())
}

/// Whether `who` may be the second person for `r`, by the Cedar rule `approve` checks (the
/// one who asked and the grantee never are).
async fn may_approve_role(
    app: &App,
    who: &Principal,
    r: &RoleRequest,
    now: DateTime<Utc>,
) -> Result<bool> {
    if r.requested_by == who.user_id || r.user_id == who.user_id {
        return Ok(false);
    }
    let held = crate::db::users::roles_of(&app.db, r.user_id, now).await?;
    Ok(app
        .policies
        .authorizer
        .decide(
            who,
            "role.grant",
            &Resource::Role(&r.role),
            &Facts {
                grantee: Some(r.user_id),
                grantee_roles: Some(held),
                requested_by: Some(r.requested_by),
                ..Facts::default()
            },
        )
        .allowed)
}
