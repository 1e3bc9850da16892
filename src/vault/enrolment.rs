//! TOTP enrolment, confirmation and recovery codes.

use super::*;
use crate::db::users::SessionScope;

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code (an SVG document) for the console to show.
    pub qr_svg: String,
}

/// Starts (or restarts) TOTP enrolment. Replacing a CONFIRMED second factor needs a current
/// code or recovery code (`current`): else a stolen password or session would be enough to
/// move the step-up to the thief's phone, and lock the owner out of it.
pub async fn enrol_totp(
    app: &App,
    who: &Principal,
    current: Option<&str>,
) -> Result<TotpEnrolment> {
    let now = app.now();
    let secret = Zeroizing::new(totp::new_secret());
    let mut tx = Deed::open(app).await?;
    let replacing = db::totp_for_update(&mut tx, who.user_id)
        .await?
        .is_some_and(|row| row.confirmed);
    if replacing
        && let Err(e) = factor::check(app, &mut tx, who.user_id, current, false, now).await?
    {
        // The counted failure sticks; the gate audits the refusal.
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    let key = app.vault.sealing_key(&mut tx).await?;
    let sealed = app.vault.seal(
        &key,
        factor::binding(who.user_id),
        totp::base32(&secret).as_bytes(),
    )?;
    if replacing {
        // The phone in use keeps working until the new one confirms a code.
        db::put_totp_pending(&mut tx, who.user_id, &sealed, now).await?;
    } else {
        db::put_totp(&mut tx, who.user_id, &sealed, now).await?;
    }
    let entry = Entry::by(who, "totp.enrol", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    let otpauth_uri = totp::otpauth_uri("changeguard", &who.username, &secret);
    Ok(TotpEnrolment {
        secret: totp::base32(&secret),
        qr_svg: totp::qr_svg(&otpauth_uri),
        otpauth_uri,
    })
}

pub async fn confirm_totp(app: &App, who: &Principal, code: &str) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if let Err(e) = factor::check(app, &mut tx, who.user_id, Some(code), true, now).await? {
        // The counted failure sticks; the gate audits the refusal.
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    // The session opened to enrol now holds both factors: its limit is lifted.
    if who.scope == SessionScope::Enrolment {
        crate::db::users::set_session_scope(
            &mut tx,
            who.user_id,
            &who.session_id,
            SessionScope::Full,
        )
        .await?;
    }
    let entry = Entry::by(who, "totp.confirm", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown once; each works once instead of a TOTP code. Only hashes are stored.
    pub codes: Vec<String>,
}

/// New recovery codes (replacing older ones); needs a fresh TOTP code.
pub async fn recovery_codes(app: &App, who: &Principal, code: &str) -> Result<RecoveryCodes> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if let Err(e) = factor::check(app, &mut tx, who.user_id, Some(code), false, now).await? {
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    let codes: Vec<String> = (0..10).map(|_| factor::new_recovery_code()).collect();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| factor::hash_recovery_code(app, who.user_id, c))
        .collect();
    db::set_recovery_codes(&mut tx, who.user_id, &hashes).await?;
    let entry = Entry::by(who, "totp.recovery_codes", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(RecoveryCodes { codes })
}

/// Whether the user has a confirmed second factor (a reveal needs one).
pub async fn has_second_factor(app: &App, user_id: i64) -> Result<bool> {
    Ok(db::has_confirmed_totp(&app.db, user_id).await?)
}
