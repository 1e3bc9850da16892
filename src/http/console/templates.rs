//! The console's templates, compiled into the binary (no files to deploy, nothing fetched) and
//! parsed once; `.html` templates escape every value (no stored XSS through titles or names).

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

const SOURCES: [(&str, &str); 23] = [
    (
        "base.html",
        include_str!("../../../templates/console/base.html"),
    ),
    (
        "account.html",
        include_str!("../../../templates/console/account.html"),
    ),
    (
        "login.html",
        include_str!("../../../templates/console/login.html"),
    ),
    (
        "calendar.html",
        include_str!("../../../templates/console/calendar.html"),
    ),
    (
        "change.html",
        include_str!("../../../templates/console/change.html"),
    ),
    (
        "new_change.html",
        include_str!("../../../templates/console/new_change.html"),
    ),
    (
        "audit.html",
        include_str!("../../../templates/console/audit.html"),
    ),
    (
        "error.html",
        include_str!("../../../templates/console/error.html"),
    ),
    (
        "macros.html",
        include_str!("../../../templates/console/macros.html"),
    ),
    (
        "users.html",
        include_str!("../../../templates/console/users.html"),
    ),
    (
        "user.html",
        include_str!("../../../templates/console/user.html"),
    ),
    (
        "systems.html",
        include_str!("../../../templates/console/systems.html"),
    ),
    (
        "years.html",
        include_str!("../../../templates/console/years.html"),
    ),
    (
        "notifications.html",
        include_str!("../../../templates/console/notifications.html"),
    ),
    (
        "feed.html",
        include_str!("../../../templates/console/feed.html"),
    ),
    (
        "totp.html",
        include_str!("../../../templates/console/totp.html"),
    ),
    (
        "changes.html",
        include_str!("../../../templates/console/changes.html"),
    ),
    (
        "inbox.html",
        include_str!("../../../templates/console/inbox.html"),
    ),
    (
        "reports.html",
        include_str!("../../../templates/console/reports.html"),
    ),
    (
        "schedule.html",
        include_str!("../../../templates/console/schedule.html"),
    ),
    (
        "assets.html",
        include_str!("../../../templates/console/assets.html"),
    ),
    (
        "vault.html",
        include_str!("../../../templates/console/vault.html"),
    ),
    (
        "credential.html",
        include_str!("../../../templates/console/credential.html"),
    ),
];

/// `{{ tr("中文", "English") }}`: the words in the page's language (`lang`, default Chinese).
fn tr(state: &minijinja::State, zh: String, en: String) -> String {
    let en_chosen = state
        .lookup("lang")
        .is_some_and(|l| l.as_str() == Some("en"));
    if en_chosen { en } else { zh }
}

pub struct Templates(Environment<'static>);

impl Templates {
    /// The parsed templates; an error names the template and line.
    pub fn get() -> Result<&'static Templates, String> {
        static T: OnceLock<Result<Templates, String>> = OnceLock::new();
        T.get_or_init(|| {
            let mut env = Environment::new();
            env.add_function("tr", tr);
            for (name, source) in SOURCES {
                env.add_template(name, source)
                    .map_err(|e| format!("console template {name}: {e:#}"))?;
            }
            Ok(Templates(env))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, String> {
        self.0
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
            .map_err(|e| format!("console template {name}: {e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_parses() {
        Templates::get().unwrap();
    }

    #[test]
    fn titles_and_names_are_escaped() {
        let evil = "<script>alert('x')</script>";
        let change = json!({
            "id": 7, "title": evil, "category": "software_upgrade", "action": null,
            "systems": [evil], "status": "submitted", "emergency": false,
            "notified_on": "2026-11-27", "earliest_start": "2026-12-03",
            "requester": {"id": 1, "username": "op", "display_name": evil},
            "assignee": {"id": 1, "username": "op", "display_name": evil},
            "risk": "low", "description": evil, "rollback_plan": evil,
            "justification": null, "outcome": null, "conflicts": [{"id": 8, "title": evil}],
        });
        let html = Templates::get()
            .unwrap()
            .render(
                "change.html",
                json!({"title": evil, "c": change, "me": {"display_name": evil, "username": "op"},
                       "can": {}, "csrf": "t", "status_label": "x", "start": "s", "end": "e",
                       "actions": [], "flash": evil}),
            )
            .unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    /// Every new page's fields holding user text: names, departments, e-mail addresses,
    /// system names, notice sources, timeline comments, recipients, subjects, errors.
    #[test]
    fn admin_pages_timeline_and_week_escape_user_text() {
        let evil = "<script>alert('x')</script>";
        let t = Templates::get().unwrap();
        let frame = |extra: serde_json::Value| {
            let mut base = json!({"title": evil, "me": {"display_name": evil, "username": evil},
                                  "can": {"users": true}, "csrf": "t", "lang": "zh", "flash": evil});
            base.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            base
        };
        let user = json!({"id": 3, "username": evil, "display_name": evil, "department": evil,
                          "email": evil, "active": true, "roles": [evil]});
        let pages = [
            (
                "users.html",
                json!({"users": [user], "can_manage": true,
                                  "form": {"username": evil, "display_name": evil, "department": evil, "email": evil}}),
            ),
            (
                "user.html",
                json!({"u": user, "created": evil, "can_manage": true, "can_grant": true,
                                 "grants": [{"role": evil, "title": evil, "granted_at": evil, "expires_at": evil}],
                                 "roles": [{"name": evil, "title": evil}]}),
            ),
            (
                "systems.html",
                json!({"can_manage": true, "form": {"key": evil, "name": evil, "owner_department": evil},
                                    "systems": [{"key": evil, "name": evil, "owner_department": evil, "updated": evil}]}),
            ),
            (
                "years.html",
                json!({"status": {"years": [{"year": 2026, "source": evil}], "warning": evil,
                                             "next_year_loaded": false},
                                  "warning": evil, "today": evil, "can_manage": true,
                                  "form": {"year": evil, "source": evil, "days_off": evil, "makeup_workdays": evil}}),
            ),
            (
                "notifications.html",
                json!({"can_retry": true, "status": evil, "statuses": ["dead"],
                                          "notices": [{"id": 1, "kind": evil, "change_id": 2, "recipients": [evil],
                                                       "subject": evil, "status": "dead", "attempts": 5,
                                                       "last_error": evil, "created_at": evil, "sent_at": null}]}),
            ),
            (
                "change.html",
                json!({"c": {"id": 7, "title": evil, "systems": [evil], "status": "approved",
                                         "requester": {"display_name": evil, "username": evil},
                                         "assignee": {"display_name": evil, "username": evil},
                                         "description": evil, "rollback_plan": evil, "conflicts": []},
                                   "category": evil, "start": "s", "end": "e", "notified_on": "n", "actions": [],
                                   "stages": [{"title": evil, "roles": evil, "department": evil, "needed": 2, "missing": 1,
                                               "state": "current", "state_label": evil,
                                               "approvals": [{"by": evil, "at": evil, "comment": evil, "on_behalf_of": evil}],
                                               "rejection": {"by": evil, "at": evil, "comment": evil, "on_behalf_of": evil}}],
                                   "events": [{"at": "t", "from_status": "submitted", "to_status": "approved",
                                               "actor": evil, "comment": evil}],
                                   "notices": [{"kind": evil, "recipients": [evil], "status": "sent", "sent_at": evil}]}),
            ),
            (
                "calendar.html",
                json!({"view": "week", "heading": evil, "anchor": "2026-11-27",
                                     "prev_href": "/console", "next_href": "/console", "switch_href": "/console",
                                     "systems": [{"key": evil, "name": evil}], "categories": [{"key": evil, "title": evil}],
                                     "statuses": ["submitted"], "filters": {"system": evil},
                                     "weeks": [[{"date": "2026-11-27", "label": evil, "kind": "holiday", "name": evil,
                                                 "changes": [{"id": 1, "title": evil, "status": "approved", "when": evil,
                                                              "emergency": true, "conflicts": [2]}]}]]}),
            ),
            (
                "changes.html",
                json!({"rows": [{"id": 1, "title": evil, "category": evil, "systems": evil, "risk": evil,
                                  "status": evil, "status_code": evil, "emergency": true, "requester": evil,
                                  "assignee": evil, "window": evil, "outcome": evil}],
                       "f": {"q": evil, "requester": evil, "assignee": evil, "from": evil, "to": evil,
                             "status": evil, "sort": evil},
                       "page": 1, "prev_href": evil, "next_href": evil, "csv_href": evil, "xlsx_href": evil,
                       "systems": [{"key": evil, "name": evil}], "categories": [{"key": evil, "title": evil}],
                       "statuses": [{"key": evil, "title": evil}], "risks": [{"key": evil, "title": evil}]}),
            ),
            (
                "assets.html",
                json!({"can_manage": true, "can_request": true,
                       "form": {"name": evil, "kind": evil, "location": evil, "custodian": evil},
                       "assets": [{"id": 1, "name": evil, "kind": evil, "location": evil, "custodian": evil,
                                   "department": evil,
                                   "disclosures": [{"id": 2, "recipient": evil, "purpose": evil,
                                                    "requested_at": evil, "state": evil, "status": evil,
                                                    "refusal_reason": evil}]}]}),
            ),
            (
                "inbox.html",
                json!({"count": 4, "tasks": 4,
                       "approvals": [{"id": 1, "title": evil, "status": evil, "status_code": evil,
                                      "emergency": true, "requester": evil, "window": evil}],
                       "to_start": [], "reviews": [],
                       "rotations": [{"id": 2, "name": evil}],
                       "grants": [{"id": 3, "credential": evil, "grantee": evil, "granted_by": evil,
                                   "expires_at": evil, "reason": evil}],
                       "disclosures": [{"id": 4, "asset": evil, "recipient": evil, "purpose": evil,
                                        "requested_by": evil, "requested_at": evil, "half_approved": true}],
                       "role_requests": [{"id": 5, "username": evil, "role": evil, "requested_by": evil,
                                          "expires_at": evil, "lapses_at": evil}]}),
            ),
            (
                "vault.html",
                json!({"credentials": [{"id": 1, "name": evil, "system": evil, "account": evil, "kind": evil,
                                        "rotation": {"due": true, "text": evil}, "last_revealed": evil,
                                        "last_revealed_by": evil, "reveal": {"allowed": false, "why": evil}}]}),
            ),
            (
                "credential.html",
                json!({"c": {"id": 1, "name": evil, "system": evil, "account": evil, "kind": evil,
                             "department": evil, "version": 2, "secret_changed_at": evil, "managed": true,
                             "rotation": {"due": false, "text": evil}, "last_revealed": evil,
                             "last_revealed_by": evil},
                       "revealed": {"secret": evil, "account": evil, "version": 2, "under": evil,
                                    "audit_seq": 9, "rotate_after_use": true},
                       "reveal": {"allowed": false, "why": evil}, "totp_enrolled": true,
                       "can_rotate": true, "can_grant": true, "show_secs": 60,
                       "grants": [{"id": 3, "grantee": evil, "granted_by": evil, "reason": evil,
                                   "expires_at": evil, "state": "active", "state_text": evil,
                                   "approved_by": evil}],
                       "access_log": [{"seq": 4, "at": evil, "actor": evil, "action": evil,
                                       "allowed": false, "why": evil, "reason": evil}]}),
            ),
        ];
        for (name, ctx) in pages {
            let html = t.render(name, frame(ctx)).unwrap();
            assert!(!html.contains("<script>alert"), "{name}: {html}");
            assert!(html.contains("&lt;script&gt;"), "{name}");
        }
    }

    #[test]
    fn the_chosen_language_only() {
        let t = Templates::get().unwrap();
        let ctx = |lang: &str| json!({"title": "t", "csrf": "c", "lang": lang});
        let zh = t.render("login.html", ctx("zh")).unwrap();
        assert!(zh.contains("用户名") && !zh.contains("Username"), "{zh}");
        let en = t.render("login.html", ctx("en")).unwrap();
        assert!(en.contains("Username") && !en.contains("用户名"), "{en}");
        assert!(en.contains(r#"<html lang="en">"#));
    }
}
