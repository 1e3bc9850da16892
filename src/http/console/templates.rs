//! The console's templates, compiled into the binary (no files to deploy, nothing fetched) and
//! parsed once; `.html` templates escape every value (no stored XSS through titles or names).

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

const SOURCES: [(&str, &str); 13] = [
    (
        "base.html",
        include_str!("../../../templates/console/base.html"),
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
}
