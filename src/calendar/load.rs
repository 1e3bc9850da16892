//! Loading `policies/calendars/cn/YYYY.toml` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::model::{Locus, YearCalendar};

pub use crate::policy::PolicyFileError;

/// Reads every `*.toml` file of `dir` (in file-name order; other entries are ignored), each one
/// year named `YYYY.toml`. Checks every file parses, is a valid year, is named after its `year`,
/// and that no year comes twice. An empty directory gives an empty list.
pub fn load_dir(dir: &Path) -> Result<Vec<YearCalendar>, PolicyFileError> {
    let io =
        |e: std::io::Error| PolicyFileError::at(dir, None, format!("cannot read directory: {e}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_toml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut loaded: BTreeMap<i32, PathBuf> = BTreeMap::new();
    let mut years = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyFileError::at(&file, None, format!("cannot read: {e}")))?;
        let cal = parse_year_file(&file, &text)?;
        if let Some(first) = loaded.get(&cal.year) {
            return Err(PolicyFileError::at(
                &file,
                key_line(&text, "year"),
                format!(
                    "year {} is already loaded from {} / {} 年重复",
                    cal.year,
                    first.display(),
                    cal.year
                ),
            ));
        }
        loaded.insert(cal.year, file);
        years.push(cal);
    }
    Ok(years)
}

/// Parses and validates the text of one year file; `file` names it in errors and its stem must
/// equal the `year` inside.
pub fn parse_year_file(file: &Path, text: &str) -> Result<YearCalendar, PolicyFileError> {
    let cal: YearCalendar = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        PolicyFileError::at(file, line, e.message().trim_end().to_string())
    })?;
    if let Err(v) = cal.check() {
        let line = match v.locus {
            Locus::Year => key_line(text, "year"),
            Locus::Source => key_line(text, "source"),
            Locus::Date { date, occurrence } => {
                date_line(text, &date.to_string(), occurrence).or_else(|| key_line(text, "year"))
            }
        };
        return Err(PolicyFileError::at(file, line, v.reason));
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != cal.year.to_string() {
        return Err(PolicyFileError::at(
            file,
            key_line(text, "year"),
            format!(
                "file name {:?} does not match year = {}: name it {}.toml / 文件名与年份不符",
                file.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                cal.year,
                cal.year
            ),
        ));
    }
    Ok(cal)
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("")))
}

/// Line of the top-level `key = ...`.
fn key_line(text: &str, key: &str) -> Option<usize> {
    code_lines(text).find_map(|(n, l)| {
        let rest = l.trim_start().strip_prefix(key)?;
        rest.trim_start().starts_with('=').then_some(n)
    })
}

/// Line of the `occurrence`-th (0-based) mention of `date` outside comments.
fn date_line(text: &str, date: &str, occurrence: usize) -> Option<usize> {
    code_lines(text)
        .flat_map(|(n, l)| l.matches(date).map(move |_| n))
        .nth(occurrence)
}
