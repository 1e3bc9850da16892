//! Known devices: a browser that signed in to an account successfully carries a signed device
//! token (the console keeps it in an `HttpOnly` cookie). A login from that device is counted
//! under the device alone, so failures of other clients — behind the bank's proxy everybody
//! shares one address — never delay the account's owner there (ASVS: no lock-out an attacker
//! can use against a victim). A thief holding the cookie still meets the delay after three
//! failures of their own.

use chrono::{DateTime, TimeDelta, Utc};
use subtle::ConstantTimeEq;

use crate::App;

/// How long a device stays known without signing in again.
pub const LIFETIME_DAYS: i64 = 90;

fn mac(app: &App, username: &str, device: &str, issued: i64) -> String {
    app.sealer.keyed_digest(
        "known device v1",
        format!("{username}|{device}|{issued}").as_bytes(),
    )
}

/// A new device token for `username` (normalised), issued at `now`: `device.issued.mac`.
pub fn issue(app: &App, username: &str, now: DateTime<Utc>) -> String {
    let device = uuid::Uuid::new_v4().simple().to_string();
    let issued = now.timestamp();
    format!("{device}.{issued}.{}", mac(app, username, &device, issued))
}

/// The device id in `token`, when it was issued by this server for `username` within the
/// last [`LIFETIME_DAYS`].
pub fn verify(app: &App, token: &str, username: &str, now: DateTime<Utc>) -> Option<String> {
    let mut parts = token.splitn(3, '.');
    let (device, issued, sent) = (parts.next()?, parts.next()?, parts.next()?);
    if device.len() != 32 || !device.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let issued: i64 = issued.parse().ok()?;
    let at = DateTime::<Utc>::from_timestamp(issued, 0)?;
    if at > now || now - at > TimeDelta::days(LIFETIME_DAYS) {
        return None;
    }
    let want = mac(app, username, device, issued);
    bool::from(want.as_bytes().ct_eq(sent.as_bytes())).then(|| device.to_string())
}
