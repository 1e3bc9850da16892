//! TOTP (RFC 6238) over HMAC-SHA1, 6 digits, 30-second steps, checked against the RFC's test
//! vectors. Single use is the caller's business: [`matching_step`] returns the step a code
//! belongs to, and the store accepts only steps after the last one used.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

pub const STEP_SECS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Codes of the previous and the next step are accepted too (clock drift).
pub const SKEW: i64 = 1;

/// A new 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    let mut b = vec![0u8; 20];
    rand::rng().fill_bytes(&mut b);
    b
}

/// The time step of a Unix time.
pub fn step_of(unix: i64) -> i64 {
    unix.div_euclid(STEP_SECS)
}

/// HOTP (RFC 4226) of `counter`, `digits` digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(digits)
}

/// The code for `step`, zero-padded.
pub fn code_at(secret: &[u8], step: i64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, step as u64, DIGITS),
        width = DIGITS as usize
    )
}

/// The step (within the skew around `now_step`) whose code is `code`, if any.
pub fn matching_step(secret: &[u8], code: &str, now_step: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (now_step - SKEW..=now_step + SKEW)
        .find(|s| constant_eq(code_at(secret, *s).as_bytes(), code.as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what authenticator apps expect).
pub fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(B32[((buffer >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Reads base32 (case-insensitive, padding and spaces ignored).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in s.chars().filter(|c| !matches!(c, '=' | ' ')) {
        let v = B32
            .iter()
            .position(|b| char::from(*b) == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
        buffer &= (1 << bits) - 1;
    }
    Some(out)
}

/// The otpauth URI as a QR code (SVG) for an authenticator app to scan; rendered here, so the
/// secret never leaves the bank for an online QR service.
pub fn qr_svg(uri: &str) -> String {
    // An otpauth URI is well under the size of a version-40 code: encoding cannot fail.
    qrcode::QrCode::new(uri.as_bytes())
        .map(|code| {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .build();
            // Without the XML declaration, so that it can be inlined into an HTML page.
            svg.find("<svg")
                .map_or(svg.clone(), |at| svg[at..].to_string())
        })
        .unwrap_or_default()
}

/// The otpauth URI for authenticator apps (Key Uri Format).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, 8 digits.
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, step_of(t) as u64, 8), want, "t={t}");
        }
    }

    #[test]
    fn rfc4226_vectors() {
        let secret = b"12345678901234567890";
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (c, w) in want.iter().enumerate() {
            assert_eq!(hotp(secret, c as u64, 6), *w);
        }
    }

    #[test]
    fn skew_and_format() {
        let s = new_secret();
        let now = step_of(1_800_000_000);
        assert_eq!(matching_step(&s, &code_at(&s, now - 1), now), Some(now - 1));
        assert_eq!(matching_step(&s, &code_at(&s, now + 1), now), Some(now + 1));
        assert_eq!(matching_step(&s, &code_at(&s, now - 3), now), None);
        assert_eq!(matching_step(&s, "12345", now), None);
        assert_eq!(matching_step(&s, "abcdef", now), None);
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let s = new_secret();
        assert_eq!(decode(&base32(&s)).unwrap(), s);
        assert_eq!(decode("mzxw6ytboi").unwrap(), b"foobar");
        assert!(decode("1").is_none());
        assert!(
            otpauth_uri("changeguard", "op.zhang", b"12345")
                .starts_with("otpauth://totp/changeguard:op.zhang?secret=GEZDGNBV")
        );
    }

    #[test]
    fn the_qr_code_reads_back_as_the_uri() {
        let uri = otpauth_uri("changeguard", "op.zhang", &new_secret());
        let svg = qr_svg(&uri);
        assert!(svg.starts_with("<svg") && svg.contains("viewBox"), "{svg}");
        // Read the SVG's dark modules back into a bitmap and decode it like a phone would.
        let size: usize = svg
            .split("width=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        let mut dark = vec![false; size * size];
        for path in svg.split("<path").skip(1) {
            let d = path
                .split("d=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            // Each module is "M{x} {y}h{w}v{h}h-{w}z".
            for m in d.split('M').skip(1) {
                let nums: Vec<usize> = m
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                let (x, y, w, h) = (nums[0], nums[1], nums[2], nums[3]);
                for yy in y..y + h {
                    for xx in x..x + w {
                        dark[yy * size + xx] = true;
                    }
                }
            }
        }
        let mut img =
            rqrr::PreparedImage::prepare_from_bitmap(size, size, |x, y| dark[y * size + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, uri);
    }
}
