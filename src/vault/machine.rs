//! Rotation after use by the machine (Art. 19): a password credential on a database target
//! (`target_database_id`, `target_account`) is rotated by changeguard itself — a random
//! password set on the target with the target's admin credential — on demand
//! (`{"generate": true}`) and when the change it was revealed for completes, is cancelled or its
//! window ends. Crash-safe: the new version is sealed and written as pending first, set on the
//! target, then promoted; a pending version a crash or a failing target left behind is set
//! again (harmless if it was set already) and promoted by the minute job.

use super::*;
use crate::dbaccess::engine;

/// A pending version older than this is taken to be abandoned (longer than any target call).
const SETTLED: TimeDelta = TimeDelta::minutes(2);

/// Who rotates: a person through the API, or changeguard after use (the minute job, a change
/// that ended).
pub enum By<'a> {
    Person {
        who: &'a Principal,
        as_assignee: bool,
        policy_ids: &'a [String],
    },
    AfterUse,
}

pub(super) fn rotation_pending() -> Error {
    Error::conflict(
        "rotation_pending",
        "该凭据的上一次轮换尚未完成，系统会自动完成，请稍后再试 / The credential's previous rotation is not finished yet; changeguard finishes it by itself, try again shortly",
    )
}

fn target_unavailable() -> Error {
    Error::Integrity {
        code: "database_target_unavailable",
        message: "无法在目标数据库上设置新密码，系统会自动重试 / The new password could not be set on the target database; changeguard retries by itself".into(),
    }
}

/// A credential's target must be a live database target of its own system, for a password.
pub(super) async fn check_target(
    tx: &mut crate::db::Tx,
    system: &str,
    kind: &str,
    t: &CredentialTarget,
) -> Result<()> {
    let invalid = |msg: &str| Error::invalid("invalid_target", msg.to_string());
    if kind != "password" {
        return Err(invalid(
            "只有 password 类凭据可以关联数据库目标 / Only a password credential may name a database target",
        ));
    }
    if !engine::valid_ident(&t.account) {
        return Err(invalid(
            "target.account 须为字母、数字和下划线，且不以数字开头 / target.account must be letters, digits and _, not starting with a digit",
        ));
    }
    let found = crate::db::dbaccess::live_target(tx, t.database_id).await?;
    if found.is_none_or(|x| x.system_key != system) {
        return Err(invalid(
            "target.database_id 须为该凭据所属系统的数据库目标 / target.database_id must be a database target of the credential's system",
        ));
    }
    Ok(())
}

/// Rotates credential `id` on its database target: pending version, target, promotion.
pub async fn rotate(app: &App, id: i64, by: By<'_>, now: DateTime<Utc>) -> Result<()> {
    let mut tx = Deed::open(app).await?;
    let c = db::get_credential_tx(&mut tx, id)
        .await
        .map_err(not_found)?;
    if c.target_database_id.is_none() {
        return Err(Error::invalid(
            "no_target",
            "该凭据未关联数据库目标，须给出 secret / The credential names no database target: give the new secret",
        ));
    }
    if db::pending_of(&mut tx, id).await?.is_some() {
        return Err(rotation_pending());
    }
    let (_, password) = engine::new_credentials();
    let version = c.version + 1;
    let key = app.vault.sealing_key(&mut tx).await?;
    let sealed = app.vault.seal(
        &key,
        binding(id, version),
        password.expose_secret().as_bytes(),
    )?;
    let after_use = matches!(by, By::AfterUse);
    db::insert_pending(&mut tx, id, version, &sealed, after_use, now).await?;
    let entry = match &by {
        By::Person {
            who,
            as_assignee,
            policy_ids,
        } => Entry::by(who, "credential.rotate_begin", format!("credential:{id}"))
            .with_policies(policy_ids)
            .with_details(
                json!({"version": version, "generated": true, "as_assignee": as_assignee}),
            ),
        By::AfterUse => Entry::ok(None, "credential.rotate_begin", format!("credential:{id}"))
            .with_reason("rotation after use")
            .with_details(json!({"version": version, "generated": true,
                                 "change_id": c.rotate_reason_change_id})),
    };
    tx.commit(&entry, now).await?;
    finish(app, id, now).await
}

/// Sets the pending version of credential `id` on its target and promotes it. Doing it twice
/// is harmless: a second promotion finds nothing pending.
async fn finish(app: &App, id: i64, now: DateTime<Utc>) -> Result<()> {
    let Some(p) = db::pending(&app.db, id).await? else {
        return Ok(());
    };
    let c = db::get_credential(&app.db, id).await.map_err(not_found)?;
    let (Some(target_id), Some(account)) = (c.target_database_id, c.target_account.clone()) else {
        return Err(Error::Internal(anyhow::anyhow!(
            "credential {id} has a pending version but no target"
        )));
    };
    let mut tx = Deed::open(app).await?;
    let t = crate::db::dbaccess::target(&mut tx, target_id).await?;
    let (admin_user, admin_password) = server_secret(app, &mut tx, t.admin_credential_id).await?;
    let password = app
        .vault
        .open(&mut tx, binding(id, p.version), &p.sealed)
        .await
        .map_err(keyring::crypto_error)?;
    // Only read: nothing to commit, and no lock may be held while the target is called.
    drop(tx);
    let admin = engine::Admin::of(&t, &admin_user, &admin_password);
    if let Err(e) = engine::set_password(&admin, &account, &password).await {
        tracing::warn!(credential = id, error = %e, "setting a rotated password on the database target failed; the job retries");
        return Err(target_unavailable());
    }
    let mut tx = Deed::open(app).await?;
    db::get_credential_tx(&mut tx, id)
        .await
        .map_err(not_found)?;
    if !db::delete_pending(&mut tx, id, p.version).await? {
        // Another instance promoted it meanwhile.
        return Ok(());
    }
    db::store_secret(&mut tx, id, p.version, &p.sealed, now).await?;
    let entry = Entry::ok(None, "credential.rotate", format!("credential:{id}"))
        .with_reason("set on the database target by changeguard")
        .with_details(
            json!({"version": p.version, "generated": true, "after_use": p.after_use,
                             "target_id": target_id, "account": account}),
        );
    tx.commit(&entry, now).await?;
    Ok(())
}

/// The minute job: finishes rotations left pending, then rotates the credentials on a
/// database target that were revealed for a change that is over (`change`: that change only,
/// right after it completed or was cancelled). Failures are logged and retried next minute.
/// Returns how many rotations were finished or done.
pub async fn rotate_due(app: &App, change: Option<i64>, now: DateTime<Utc>) -> Result<usize> {
    let mut done = 0;
    if change.is_none() {
        for id in db::pending_since(&app.db, now - SETTLED).await? {
            match finish(app, id, now).await {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::error!(credential = id, error = %e, "a credential rotation is still not finished")
                }
            }
        }
    }
    let grace = TimeDelta::minutes(app.policies.security.reveal_grace_minutes.max(0));
    for id in db::after_use_due(&app.db, change, now - grace).await? {
        match rotate(app, id, By::AfterUse, now).await {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(credential = id, error = %e, "rotation after use failed; the job retries")
            }
        }
    }
    Ok(done)
}
