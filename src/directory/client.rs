//! Talking to the directory: a connection per operation (StartTLS or LDAPS with the bank's CA),
//! the service bind, the search for one person, and the bind as that person.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use secrecy::{ExposeSecret, SecretString};

use super::config::{Connection, DirectoryPolicy, DisabledBy, Transport};
use super::dn;

/// How long connecting and each operation may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The directory could not be asked (unreachable, TLS refused, the service bind failed). The
/// text is for the log; it never holds a password.
#[derive(Debug, thiserror::Error)]
#[error("directory: {0}")]
pub struct Down(pub String);

/// A person as the directory has them.
#[derive(Debug, Clone)]
pub struct Person {
    pub dn: String,
    /// The entry's lasting identifier (`id_attribute`; binary values such as AD's `objectGUID`
    /// in hex).
    pub id: String,
    pub display_name: Option<String>,
    pub department: Option<String>,
    pub email: Option<String>,
    /// The groups (DNs) the person is a member of, as far as the mapping needs to know.
    pub groups: Vec<String>,
}

fn down(what: &str, e: impl std::fmt::Display) -> Down {
    Down(format!("{what}: {e}"))
}

fn tls_config(conn: &Connection) -> Result<Arc<rustls::ClientConfig>, Down> {
    let mut roots = rustls::RootCertStore::empty();
    match &conn.ca_file {
        Some(file) => {
            let pem = std::fs::read(file).map_err(|e| down("CA file", e))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| down("CA file", e))?;
                roots.add(cert).map_err(|e| down("CA file", e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| down("TLS", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A new connection, TLS as configured.
pub async fn connect(conn: &Connection) -> Result<Ldap, Down> {
    let mut settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT);
    if conn.transport != Transport::Plain {
        settings = settings.set_config(tls_config(conn)?);
    }
    if conn.transport == Transport::StartTls {
        settings = settings.set_starttls(true);
    }
    let (driver, ldap) = LdapConnAsync::with_settings(settings, &conn.url)
        .await
        .map_err(|e| down("connect", e))?;
    ldap3::drive!(driver);
    Ok(ldap)
}

/// Binds as `dn`; an empty password is refused here, never sent (it would be anonymous).
/// Ok(false): the directory refused the password (invalidCredentials).
async fn bind(ldap: &mut Ldap, dn: &str, password: &SecretString) -> Result<bool, Down> {
    if dn.is_empty() || password.expose_secret().is_empty() {
        return Ok(false);
    }
    let r = ldap
        .with_timeout(TIMEOUT)
        .simple_bind(dn, password.expose_secret())
        .await
        .map_err(|e| down("bind", e))?;
    match r.rc {
        0 => Ok(true),
        49 => Ok(false),
        rc => Err(Down(format!("bind: result code {rc}"))),
    }
}

/// A connection bound as the service account.
pub async fn service(conn: &Connection) -> Result<Ldap, Down> {
    let mut ldap = connect(conn).await?;
    if !bind(&mut ldap, &conn.bind_dn, &conn.bind_password).await? {
        return Err(Down("the service account's bind was refused".into()));
    }
    Ok(ldap)
}

fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first().cloned())
        .filter(|v| !v.trim().is_empty())
}

fn all(entry: &SearchEntry, attr: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect()
}

/// The filter for `username`, escaped (RFC 4515): `*)(uid=*` is a name, not a filter.
pub fn user_filter(policy: &DirectoryPolicy, username: &str) -> String {
    policy
        .user_filter
        .replace("{username}", &ldap_escape(username))
}

/// The entry's value of `attr`, text or (AD's `objectGUID`) binary in hex.
fn identifier(entry: &SearchEntry, attr: &str) -> Option<String> {
    first(entry, attr).or_else(|| {
        entry
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .and_then(|(_, v)| v.first())
            .filter(|v| !v.is_empty())
            .map(hex::encode)
    })
}

/// AD's `accountExpires` (100-ns intervals since 1601-01-01 UTC; 0 and `i64::MAX` mean never)
/// has passed at `now`.
pub fn account_expired(value: &str, now: DateTime<Utc>) -> bool {
    const EPOCH_DIFF_SECS: i64 = 11_644_473_600;
    match value.trim().parse::<i64>() {
        Ok(0) | Ok(i64::MAX) | Err(_) => false,
        Ok(ticks) => {
            let secs = ticks / 10_000_000 - EPOCH_DIFF_SECS;
            DateTime::from_timestamp(secs, 0).is_some_and(|at| at <= now)
        }
    }
}

/// What the directory answers for a username.
#[derive(Debug)]
pub enum Found {
    Person(Person),
    /// No entry.
    Gone,
    /// The entry is disabled (or, AD, expired).
    Disabled,
    /// Several entries, one that does not carry the typed name, or one without its lasting
    /// identifier: nobody signs in with the name, and nothing here is changed because of it
    /// (others may be able to make a name ambiguous).
    Unclear(&'static str),
}

/// Finds the one entry for `username`.
pub async fn find(
    ldap: &mut Ldap,
    policy: &DirectoryPolicy,
    username: &str,
    now: DateTime<Utc>,
) -> Result<Found, Down> {
    let filter = user_filter(policy, username);
    let attrs = vec![
        policy.username_attribute.as_str(),
        policy.id_attribute.as_str(),
        "accountExpires",
        policy.display_name_attribute.as_str(),
        policy.department_attribute.as_str(),
        policy.email_attribute.as_str(),
        policy.member_of_attribute.as_str(),
        policy.disabled_attribute.as_str(),
        "userAccountControl",
    ];
    let (entries, _) = ldap
        .with_timeout(TIMEOUT)
        .search(&policy.user_base, Scope::Subtree, &filter, attrs)
        .await
        .map_err(|e| down("search", e))?
        .success()
        .map_err(|e| down("search", e))?;
    if entries.len() > 1 {
        return Ok(Found::Unclear("the username matches several entries"));
    }
    let Some(raw) = entries.into_iter().next() else {
        return Ok(Found::Gone);
    };
    let entry = SearchEntry::construct(raw);
    // Whatever the filter matched, the entry is this person only if it carries the typed name.
    let named = all(&entry, &policy.username_attribute)
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case(username));
    if !named {
        return Ok(Found::Unclear(
            "the entry found does not carry the typed name in username_attribute",
        ));
    }

    let disabled = match policy.disabled_by {
        DisabledBy::UserAccountControl => {
            first(&entry, "userAccountControl")
                .and_then(|v| v.trim().parse::<u32>().ok())
                .is_some_and(|uac| uac & 2 != 0)
                || first(&entry, "accountExpires").is_some_and(|v| account_expired(&v, now))
        }
        DisabledBy::Attribute => first(&entry, &policy.disabled_attribute).is_some(),
        DisabledBy::Gone => false,
    };
    if disabled {
        return Ok(Found::Disabled);
    }
    let Some(id) = identifier(&entry, &policy.id_attribute) else {
        return Ok(Found::Unclear(
            "the entry found has no id_attribute (check the attribute name and that the service account may read it)",
        ));
    };
    let mut groups = all(&entry, &policy.member_of_attribute);
    if policy.nested_groups {
        for g in &policy.groups {
            let filter = format!(
                "(memberOf:1.2.840.113556.1.4.1941:={})",
                ldap_escape(&g.group)
            );
            let (hits, _) = ldap
                .with_timeout(TIMEOUT)
                .search(&entry.dn, Scope::Base, &filter, vec!["1.1"])
                .await
                .map_err(|e| down("search", e))?
                .success()
                .map_err(|e| down("search", e))?;
            if !hits.is_empty() {
                groups.push(g.group.clone());
            }
        }
    }
    Ok(Found::Person(Person {
        id,
        display_name: first(&entry, &policy.display_name_attribute),
        department: first(&entry, &policy.department_attribute),
        email: first(&entry, &policy.email_attribute),
        dn: entry.dn,
        groups,
    }))
}

/// Whether `password` is `dn`'s, by a bind on a connection of its own.
pub async fn check_password(
    conn: &Connection,
    dn: &str,
    password: &SecretString,
) -> Result<bool, Down> {
    let mut ldap = connect(conn).await?;
    let ok = bind(&mut ldap, dn, password).await?;
    let _ = ldap.unbind().await;
    Ok(ok)
}

/// Whether `group` (a DN, or a name: the `cn` of a group directly below `group_base`) is
/// one of `groups` (DNs). A group of the same name elsewhere in the tree does not count.
pub fn is_member(groups: &[dn::Dn], group: &str, group_base: Option<&dn::Dn>) -> bool {
    if group.contains('=') {
        let Some(want) = dn::parse(group) else {
            return false;
        };
        return groups.contains(&want);
    }
    let Some(base) = group_base else {
        return false;
    };
    let name = dn::normalize_value(group);
    groups
        .iter()
        .any(|g| g.is_child_of(base) && g.cn() == Some(name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_expiry_in_ad_ticks() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(!account_expired("0", now));
        assert!(!account_expired("9223372036854775807", now));
        // 2026-01-01T00:00:00Z and 2027-01-01T00:00:00Z as FILETIME.
        assert!(account_expired("134116992000000000", now));
        assert!(!account_expired("134432352000000000", now));
    }

    #[test]
    fn groups_by_name_count_only_below_the_base() {
        let groups: Vec<dn::Dn> = [
            "cn=operators,ou=groups,dc=bank",
            "CN=Auditors,OU=Elsewhere,DC=bank",
        ]
        .iter()
        .filter_map(|g| dn::parse(g))
        .collect();
        let base = dn::parse("ou=groups,dc=bank").unwrap();
        assert!(is_member(&groups, "operators", Some(&base)));
        assert!(is_member(&groups, "Operators", Some(&base)));
        assert!(!is_member(&groups, "auditors", Some(&base)));
        // Deeper down (a sub-OU somebody else administers) or another RDN type: no.
        let deeper: Vec<dn::Dn> = [
            "cn=ops,ou=team,ou=groups,dc=bank",
            "ou=ops,ou=groups,dc=bank",
        ]
        .iter()
        .filter_map(|g| dn::parse(g))
        .collect();
        assert!(!is_member(&deeper, "ops", Some(&base)));
        assert!(!is_member(&groups, "operators", None));
        assert!(is_member(
            &groups,
            "CN=Auditors, OU=Elsewhere, DC=Bank",
            None
        ));
        assert!(!is_member(&groups, "cn=auditors,dc=bank", None));
    }
}
