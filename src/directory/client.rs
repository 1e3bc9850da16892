//! Talking to the directory: a connection per operation (StartTLS or LDAPS with the bank's CA),
//! the service bind, the search for one person, and the bind as that person.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use secrecy::{ExposeSecret, SecretString};

use super::config::{Connection, DirectoryPolicy, DisabledBy, Transport};

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
    pub display_name: Option<String>,
    pub department: Option<String>,
    pub email: Option<String>,
    /// The groups (DNs) the person is a member of, as far as the mapping needs to know.
    pub groups: Vec<String>,
    pub disabled: bool,
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

/// Finds the one entry for `username` (none, or several: `None`).
pub async fn find(
    ldap: &mut Ldap,
    policy: &DirectoryPolicy,
    username: &str,
) -> Result<Option<Person>, Down> {
    let filter = user_filter(policy, username);
    let attrs = vec![
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
    if entries.len() != 1 {
        if entries.len() > 1 {
            tracing::warn!(
                found = entries.len(),
                "directory: the username matches several entries; nobody signs in with it"
            );
        }
        return Ok(None);
    }
    let Some(raw) = entries.into_iter().next() else {
        return Ok(None);
    };
    let entry = SearchEntry::construct(raw);
    let disabled = match policy.disabled_by {
        DisabledBy::UserAccountControl => first(&entry, "userAccountControl")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|uac| uac & 2 != 0),
        DisabledBy::Attribute => first(&entry, &policy.disabled_attribute).is_some(),
        DisabledBy::Gone => false,
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
    Ok(Some(Person {
        display_name: first(&entry, &policy.display_name_attribute),
        department: first(&entry, &policy.department_attribute),
        email: first(&entry, &policy.email_attribute),
        dn: entry.dn,
        groups,
        disabled,
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

/// Whether `group` (a DN or a name) is one of `groups` (DNs).
pub fn is_member(groups: &[String], group: &str) -> bool {
    let norm = |s: &str| s.replace(' ', "").to_lowercase();
    groups.iter().any(|g| {
        norm(g) == norm(group)
            || g.split(',')
                .next()
                .and_then(|rdn| rdn.split_once('='))
                .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case(group.trim()))
    })
}
