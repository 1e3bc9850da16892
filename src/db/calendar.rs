//! Calendar years loaded at run time.

use chrono::{DateTime, Utc};

use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

/// (year, calendar JSON) of every year stored in the database.
pub async fn years(db: &Db) -> Result<Vec<(i32, String)>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, (i32, String)>(
        "SELECT year, calendar FROM holiday_years ORDER BY year"
    )
    .fetch_all(p)
    .await)?)
}

/// Changes whenever a year is stored: (number of years, highest revision).
pub async fn signature(db: &Db) -> Result<(i64, Option<i64>)> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, (i64, Option<i64>)>(
        "SELECT COUNT(*), MAX(revision) FROM holiday_years"
    )
    .fetch_one(p)
    .await)?)
}

pub async fn upsert(
    tx: &mut Tx,
    year: i32,
    source: &str,
    calendar_json: &str,
    by: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let existed = on_tx!(tx, |c| sqlx::query_scalar::<_, i32>(
        "SELECT year FROM holiday_years WHERE year = $1"
    )
    .bind(year)
    .fetch_optional(c)
    .await)?
    .is_some();
    on_tx!(tx, |c| {
        sqlx::query(
            "INSERT INTO holiday_years (year, source, calendar, updated_by, updated_at, revision) \
         VALUES ($1, $2, $3, $4, $5, (SELECT COALESCE(MAX(revision), 0) + 1 FROM holiday_years)) \
         ON CONFLICT (year) DO UPDATE SET source = excluded.source, calendar = excluded.calendar, \
         updated_by = excluded.updated_by, updated_at = excluded.updated_at, \
         revision = excluded.revision",
        )
        .bind(year)
        .bind(source)
        .bind(calendar_json)
        .bind(by)
        .bind(now)
        .execute(c)
        .await
        .map(|_| ())
    })?;
    Ok(existed)
}
