//! The one validator of free text, for every field a person or a machine sends.
//!
//! A field is a single line (a title, a name, a department) or several lines (a description, a
//! rollback plan, a reason). Neither may hold a control character other than, in a multi-line
//! field, line feed, tab and the carriage return of a CRLF line end (browsers send textareas
//! that way). PostgreSQL refuses a NUL in `TEXT` outright, so without this check such input was
//! a 500 there and silently stored on SQLite; it is a 422 `invalid_text` naming the field on
//! both.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// What a field may hold besides printable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// No control character at all.
    One,
    /// Line feeds, tabs and CRLF line ends.
    Many,
}

/// The first character `v` may not hold, with its position (in characters).
pub fn forbidden_char(v: &str, lines: Lines) -> Option<(usize, char)> {
    let mut chars = v.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        let ok = !c.is_control()
            || lines == Lines::Many
                && match c {
                    '\n' | '\t' => true,
                    '\r' => chars.peek().is_some_and(|(_, n)| *n == '\n'),
                    _ => false,
                };
        if !ok {
            return Some((i, c));
        }
    }
    None
}

/// The 422 of a control character in `field`.
/// Fields whose value is a secret: a refusal names the field only, never where in the value
/// the character was nor which (a password's length and shape stay unknown, also to the audit
/// trail that records the refusal).
const SECRET_FIELDS: &[&str] = &["password", "secret", "totp", "code", "current", "token"];

fn is_secret(field: &str) -> bool {
    // The last name of the path, without list indexes: `a.new_password`, `secrets[2]`.
    let last = field
        .split('.')
        .next_back()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let last = last.strip_suffix('s').unwrap_or(&last);
    SECRET_FIELDS
        .iter()
        .any(|name| last == *name || last.ends_with(&format!("_{name}")))
}

pub fn invalid_text(field: &str, at: usize, c: char) -> Error {
    let mut extra = Map::new();
    extra.insert("field".into(), json!(field));
    if is_secret(field) {
        return Error::Unprocessable {
            code: "invalid_text",
            message: format!(
                "{field} 含有不允许的控制字符 / {field} contains a control character that is not allowed"
            ),
            extra,
        };
    }
    extra.insert("position".into(), json!(at));
    Error::Unprocessable {
        code: "invalid_text",
        message: format!(
            "{field} 含有不允许的控制字符（第 {} 个字符，U+{:04X}） / {field} contains a control character that is not allowed (character {}, U+{:04X})",
            at + 1,
            c as u32,
            at + 1,
            c as u32
        ),
        extra,
    }
}

/// Only allowed characters in `v`.
pub fn clean(field: &str, v: &str, lines: Lines) -> Result<()> {
    match forbidden_char(v, lines) {
        Some((at, c)) => Err(invalid_text(field, at, c)),
        None => Ok(()),
    }
}

/// A required field: not blank, at most `max` characters, only allowed characters.
pub fn required(field: &str, v: &str, max: usize, lines: Lines) -> Result<()> {
    if v.trim().is_empty() || v.chars().count() > max {
        let mut extra = Map::new();
        extra.insert("field".into(), json!(field));
        return Err(Error::Unprocessable {
            code: "invalid_field",
            message: format!(
                "{field} 不能为空且不超过 {max} 个字符 / {field} must be 1 to {max} characters"
            ),
            extra,
        });
    }
    clean(field, v, lines)
}

/// An optional field: when given, at most `max` characters and only allowed characters (blank
/// is allowed).
pub fn optional(field: &str, v: Option<&str>, max: usize, lines: Lines) -> Result<()> {
    let Some(v) = v else { return Ok(()) };
    if v.chars().count() > max {
        let mut extra = Map::new();
        extra.insert("field".into(), json!(field));
        return Err(Error::Unprocessable {
            code: "invalid_field",
            message: format!(
                "{field} 不超过 {max} 个字符 / {field} must be at most {max} characters"
            ),
            extra,
        });
    }
    clean(field, v, lines)
}

/// The safety net under every JSON body: the path of the first string (or object key) that
/// holds a control character no field allows (anything but LF, tab and CRLF), so that no
/// field, validated or not, can carry one to the database. Per-field rules
/// ([`required`] / [`optional`] with [`Lines::One`]) are stricter.
pub fn first_forbidden_in_json(v: &Value) -> Option<(String, usize, char)> {
    fn walk(v: &Value, path: &mut String) -> Option<(String, usize, char)> {
        match v {
            Value::String(s) => forbidden_char(s, Lines::Many).map(|(i, c)| (path.clone(), i, c)),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                path.truncate(len);
                found
            }),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                // A bad key is never echoed (it would reach the audit trail): a placeholder.
                let found = match forbidden_char(k, Lines::One) {
                    Some((i, c)) => {
                        path.truncate(len);
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str("<key>");
                        Some((path.clone(), i, c))
                    }
                    None => walk(item, path),
                };
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }
    walk(v, &mut String::new())
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_fields_are_known_by_their_last_name() {
        for f in [
            "password",
            "a.new_password",
            "secrets[2]",
            "Password",
            "client_secret",
            "totp",
        ] {
            assert!(super::is_secret(f), "{f}");
        }
        for f in ["title", "systems[1]", "status", "passwordless_note"] {
            assert!(!super::is_secret(f), "{f}");
        }
    }

    use super::*;

    #[test]
    fn single_line_fields_hold_no_control_character() {
        assert_eq!(forbidden_char("数据库升级 v2", Lines::One), None);
        assert_eq!(forbidden_char("a\nb", Lines::One), Some((1, '\n')));
        assert_eq!(forbidden_char("a\tb", Lines::One), Some((1, '\t')));
        assert_eq!(forbidden_char("ab\0", Lines::One), Some((2, '\0')));
        assert_eq!(forbidden_char("\u{7f}", Lines::One), Some((0, '\u{7f}')));
        assert_eq!(forbidden_char("\u{85}", Lines::One), Some((0, '\u{85}')));
    }

    #[test]
    fn multi_line_fields_hold_newlines_tabs_and_crlf_only() {
        assert_eq!(forbidden_char("一\n二\t三\r\n四", Lines::Many), None);
        assert_eq!(forbidden_char("a\rb", Lines::Many), Some((1, '\r')));
        assert_eq!(forbidden_char("a\r", Lines::Many), Some((1, '\r')));
        assert_eq!(
            forbidden_char("a\u{1b}[31m", Lines::Many),
            Some((1, '\u{1b}'))
        );
        assert_eq!(forbidden_char("\0", Lines::Many), Some((0, '\0')));
    }

    #[test]
    fn the_error_names_the_field() {
        let e = required("title", "x\0", 200, Lines::One).unwrap_err();
        assert_eq!(e.code(), "invalid_text");
        assert!(e.to_string().contains("title"), "{e}");
        assert_eq!(
            required("title", " ", 200, Lines::One).unwrap_err().code(),
            "invalid_field"
        );
        assert!(optional("impact", None, 10, Lines::Many).is_ok());
        assert!(optional("impact", Some(""), 10, Lines::Many).is_ok());
    }

    #[test]
    fn the_json_net_finds_the_path_of_the_first_bad_string() {
        let v = json!({"title": "ok", "systems": ["core", "a\u{0}b"]});
        assert_eq!(
            first_forbidden_in_json(&v),
            Some(("systems[1]".to_string(), 1, '\0'))
        );
        let v = json!({"grants": {"update": ["x\u{7}"]}});
        assert_eq!(
            first_forbidden_in_json(&v).map(|f| f.0),
            Some("grants.update[0]".to_string())
        );
        let v = json!({"a": {"x\u{0}y": 1}});
        assert_eq!(
            first_forbidden_in_json(&v),
            Some(("a.<key>".to_string(), 1, '\0'))
        );
        assert_eq!(first_forbidden_in_json(&json!({"d": "a\r\nb\tc"})), None);
        assert_eq!(first_forbidden_in_json(&json!({"n": 1, "b": true})), None);
    }
}
