//! A table the console offers for download: CSV (UTF-8 with a byte-order mark, so Excel opens
//! Chinese correctly) or an XLSX workbook. Every cell is text; a CSV cell that a spreadsheet
//! would take for a formula (`=`, `+`, `-`, `@`, tab, CR, or a full-width `＝＋－＠`) is prefixed with `'` (CSV injection).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rust_xlsxwriter::{Format, Workbook};

use crate::error::Error;

/// The two forms a table is downloaded in.
#[derive(Debug, Clone, Copy)]
pub enum Download {
    Csv,
    Xlsx,
}

impl Download {
    /// The file name's extension, which is also the form's name in the audit trail.
    pub fn extension(self) -> &'static str {
        match self {
            Download::Csv => "csv",
            Download::Xlsx => "xlsx",
        }
    }
}

pub struct Table {
    /// The worksheet's name.
    pub sheet: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn failed(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("{what}: {e}"))
}

/// The characters that make a spreadsheet read a cell as a formula, full-width forms included
/// (a Chinese input method types `＝` and some spreadsheets take it as `=`).
const FORMULA_STARTS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];

/// The cell as a spreadsheet reads it literally.
fn inert(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

impl Table {
    pub fn csv(&self) -> Result<Vec<u8>, Error> {
        let mut out = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        out.write_record(self.header.iter().map(|c| inert(c).into_owned()))
            .map_err(|e| failed("csv", e))?;
        for row in &self.rows {
            out.write_record(row.iter().map(|c| inert(c).into_owned()))
                .map_err(|e| failed("csv", e))?;
        }
        out.into_inner().map_err(|e| failed("csv", e))
    }

    pub fn xlsx(&self) -> Result<Vec<u8>, Error> {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        sheet.set_name(&self.sheet).map_err(|e| failed("xlsx", e))?;
        let bold = Format::new().set_bold();
        for (col, title) in self.header.iter().enumerate() {
            let col = col as u16;
            sheet
                .write_string_with_format(0, col, title, &bold)
                .map_err(|e| failed("xlsx", e))?;
        }
        for (r, row) in self.rows.iter().enumerate() {
            for (col, cell) in row.iter().enumerate() {
                // Strings, never formulas: a title starting with `=` stays text.
                sheet
                    .write_string(r as u32 + 1, col as u16, cell)
                    .map_err(|e| failed("xlsx", e))?;
            }
        }
        sheet
            .set_freeze_panes(1, 0)
            .map_err(|e| failed("xlsx", e))?;
        sheet.autofit();
        book.save_to_buffer().map_err(|e| failed("xlsx", e))
    }

    /// The table as a download named `{stem}.csv` or `{stem}.xlsx` (`stem` is built by the
    /// server, ASCII), never cached.
    pub fn download(&self, form: Download, stem: &str) -> Result<Response, Error> {
        let (body, content_type) = match form {
            Download::Csv => (self.csv()?, "text/csv; charset=utf-8"),
            Download::Xlsx => (
                self.xlsx()?,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
        };
        let ext = form.extension();
        let mut resp = body.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{stem}.{ext}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            sheet: "变更".into(),
            header: vec!["编号".into(), "标题".into()],
            rows: vec![
                vec!["1".into(), "核心系统升级, \"第一期\"".into()],
                vec!["2".into(), "=HYPERLINK(\"http://x\")".into()],
            ],
        }
    }

    #[test]
    fn csv_starts_with_a_bom_quotes_and_defuses_formulas() {
        let body = String::from_utf8(sample().csv().unwrap()).unwrap();
        assert!(body.starts_with('\u{feff}'));
        let lines: Vec<&str> = body.trim_start_matches('\u{feff}').lines().collect();
        assert_eq!(lines[0], "编号,标题");
        assert_eq!(lines[1], "1,\"核心系统升级, \"\"第一期\"\"\"");
        assert_eq!(lines[2], "2,\"'=HYPERLINK(\"\"http://x\"\")\"");
    }

    #[test]
    fn csv_defuses_full_width_signs_and_header_cells() {
        let table = Table {
            sheet: "t".into(),
            header: vec!["@SUM(A1)".into(), "标题".into()],
            rows: vec![vec!["＝1+1".into(), "－2".into()]],
        };
        let body = String::from_utf8(table.csv().unwrap()).unwrap();
        let lines: Vec<&str> = body.trim_start_matches('\u{feff}').lines().collect();
        assert_eq!(lines[0], "'@SUM(A1),标题");
        assert_eq!(lines[1], "'＝1+1,'－2");
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let body = sample().xlsx().unwrap();
        assert_eq!(&body[..2], b"PK");
    }
}
