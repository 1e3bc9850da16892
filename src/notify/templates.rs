//! Email templates in files (`templates/email/{zh,en}/*.{txt,html}`), read and checked at start-up.
//!
//! The first line of a `.txt` template is the subject (without the `[变更通知]` prefix); the rest
//! is the plain-text body. `.html` templates are HTML-escaped automatically.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// Every template a notice can use.
pub const NAMES: &[&str] = &["change", "digest", "calendar_missing", "notice"];

/// The prefix of every subject, so the bank's mail rules can file the notices.
pub const SUBJECT_PREFIX: &str = "[变更通知]";

pub struct Templates {
    env: Environment<'static>,
    pub language: String,
}

/// A rendered message.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// Reads `dir/email/{language}/{name}.{txt,html}` for every name and checks that they parse.
    pub fn load(dir: &Path, language: &str) -> anyhow::Result<Templates> {
        let mut env = Environment::new();
        let base = dir.join("email").join(language);
        for name in NAMES {
            for ext in ["txt", "html"] {
                let path = base.join(format!("{name}.{ext}"));
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e} (set CHANGEGUARD_TEMPLATES_DIR to the folder holding email/)",
                        path.display()
                    )
                })?;
                env.add_template_owned(format!("{name}.{ext}"), src)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}:{}: {}",
                            path.display(),
                            e.line().unwrap_or(0),
                            e.detail().unwrap_or("template error")
                        )
                    })?;
            }
        }
        Ok(Templates {
            env,
            language: language.to_string(),
        })
    }

    /// The text of the notices' language: `zh` unless the templates are English.
    pub fn pick<'a>(&self, zh: &'a str, en: &'a str) -> &'a str {
        if self.language == "en" { en } else { zh }
    }

    /// Renders `name` with `ctx`: subject (prefixed), text and HTML.
    pub fn render(&self, name: &str, ctx: &impl Serialize) -> Result<Rendered, minijinja::Error> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        let text = self
            .env
            .get_template(&format!("{name}.txt"))?
            .render(ctx.clone())?;
        let (first, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let subject = format!("{SUBJECT_PREFIX} {}", first.trim());
        let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
        let html = self
            .env
            .get_template(&format!("{name}.html"))?
            .render(minijinja::context! { subject => &subject, ..ctx })?;
        Ok(Rendered {
            subject,
            text: body.trim_start_matches('\n').to_string(),
            html,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_parse_and_escape() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for lang in ["zh", "en"] {
            let t = Templates::load(&dir, lang).unwrap();
            let r = t
                .render("calendar_missing", &serde_json::json!({"year": 2027}))
                .unwrap();
            assert!(r.subject.starts_with("[变更通知] "), "{}", r.subject);
            assert!(r.subject.contains("2027"));
            assert!(r.text.contains("2027"));
        }
        let t = Templates::load(&dir, "zh").unwrap();
        let r = t
            .render(
                "digest",
                &serde_json::json!({"days": 3, "from": "a", "to": "b", "timezone": "Asia/Shanghai",
                    "changes": [{"id": 1, "title": "<script>", "status": "approved", "emergency": false,
                    "planned_start": "x", "planned_end": "y", "systems": ["core"], "assignee": "op", "link": "l"}]}),
            )
            .unwrap();
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(r.text.contains("<script>"));

        // The notice of a disclosure, reveal or grant: facts as label/value rows.
        for lang in ["zh", "en"] {
            let t = Templates::load(&dir, lang).unwrap();
            let r = t
                .render(
                    "notice",
                    &serde_json::json!({"headline": "凭据已取用：<b>db</b>",
                        "facts": [["取用人", "<img src=x>"], ["事由", "修复"]],
                        "comment": "请轮换", "link": "http://x/api/v1/credentials/1"}),
                )
                .unwrap();
            assert_eq!(r.subject, "[变更通知] 凭据已取用：<b>db</b>");
            assert!(r.text.contains("<img src=x>") && r.text.contains("请轮换"));
            assert!(r.text.contains("http://x/api/v1/credentials/1"));
            assert!(r.html.contains("&lt;img src=x&gt;") && !r.html.contains("<img"));
            assert!(r.html.contains("&lt;b&gt;db"));
        }
    }
}
