//! The console's language: Simplified Chinese first, English on request (the `cg_lang` cookie,
//! switched by a link in the header). Labels, buttons and messages show the chosen language
//! only; a domain message ("中文 / English") is cut to its half in that language.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub(crate) const LANG_COOKIE: &str = "cg_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn from_cookie(v: Option<&str>) -> Lang {
        match v {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// `zh` or `en`, whichever is chosen.
    pub fn tr<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// The half of a bilingual message ("中文 / English") in this language; a message that is
    /// not cut that way is shown whole (readable either way).
    pub fn pick(self, text: &str) -> String {
        match split_bilingual(text) {
            Some((zh, en)) => self.tr(zh, en).to_string(),
            None => text.to_string(),
        }
    }

    /// A moment in the bank's time zone: `2026年11月27日 22:00` or `2026-11-27 22:00`.
    pub fn moment(self, t: DateTime<Utc>, tz: Tz) -> String {
        let t = t.with_timezone(&tz);
        match self {
            Lang::Zh => t.format("%Y年%-m月%-d日 %H:%M").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// A moment to the second, for the audit trail.
    pub fn moment_secs(self, t: DateTime<Utc>, tz: Tz) -> String {
        let t = t.with_timezone(&tz);
        match self {
            Lang::Zh => t.format("%Y年%-m月%-d日 %H:%M:%S").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    /// A day: `2026年11月27日（星期五）` or `Fri 2026-11-27`.
    pub fn day(self, d: NaiveDate) -> String {
        use chrono::Datelike;
        const WEEKDAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
        match self {
            Lang::Zh => format!(
                "{}年{}月{}日（星期{}）",
                d.year(),
                d.month(),
                d.day(),
                WEEKDAYS[d.weekday().num_days_from_monday() as usize]
            ),
            Lang::En => d.format("%a %Y-%m-%d").to_string(),
        }
    }
}

impl Lang {
    /// A day of the week view (the year is in the heading): `12月3日 周四` or `Thu Dec 3`.
    pub fn weekday_label(self, d: NaiveDate) -> String {
        use chrono::Datelike;
        const WEEKDAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
        match self {
            Lang::Zh => format!(
                "{}月{}日 周{}",
                d.month(),
                d.day(),
                WEEKDAYS[d.weekday().num_days_from_monday() as usize]
            ),
            Lang::En => d.format("%a %b %-d").to_string(),
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3000}'..='\u{9fff}' | '\u{ff00}'..='\u{ffef}')
}

/// "中文 / English" → ("中文", "English"): the first ` / ` with Chinese before it and none after.
fn split_bilingual(text: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(i) = text[from..].find(" / ") {
        let at = from + i;
        let (zh, en) = (&text[..at], &text[at + 3..]);
        if zh.chars().any(is_cjk) && !en.chars().any(is_cjk) && !en.trim().is_empty() {
            return Some((zh.trim(), en.trim()));
        }
        from = at + 3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilingual_messages_are_cut_in_half() {
        let m = "通知时间不足：最早可于 2026-12-03 00:00 开始。 / Insufficient notice: from 2026-12-03.";
        assert_eq!(
            Lang::Zh.pick(m),
            "通知时间不足：最早可于 2026-12-03 00:00 开始。"
        );
        assert_eq!(Lang::En.pick(m), "Insufficient notice: from 2026-12-03.");
        // Not a bilingual message: shown whole.
        assert_eq!(Lang::En.pick("install / replace"), "install / replace");
        assert_eq!(Lang::Zh.pick("只有中文"), "只有中文");
        // A slash inside the Chinese half.
        let m = "status 须为 / status must be one of: a, b";
        assert_eq!(Lang::En.pick(m), "status must be one of: a, b");
    }

    #[test]
    fn dates_in_chinese_formats() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(Lang::Zh.day(d), "2026年11月27日（星期五）");
        let t = DateTime::parse_from_rfc3339("2026-11-27T14:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Lang::Zh.moment(t, chrono_tz::Asia::Shanghai),
            "2026年11月27日 22:05"
        );
    }
}
