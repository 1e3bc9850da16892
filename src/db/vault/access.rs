//! The vault's access log.

use super::*;

/// Audit entries about one credential, newest first.
pub async fn access_log(
    db: &Db,
    credential_id: i64,
    limit: i64,
) -> Result<Vec<crate::audit::Record>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, crate::audit::Record>(
            "SELECT seq, at, actor_id, actor, action, target, outcome, code, reason, policy_ids, \
         details, request_id, prev_hash, hash FROM audit_log WHERE target = $1 \
         ORDER BY seq DESC LIMIT $2",
        )
        .bind(format!("credential:{credential_id}"))
        .bind(limit)
        .fetch_all(p)
        .await
    })?)
}
