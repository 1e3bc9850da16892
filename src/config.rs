//! Settings from the environment (`CHANGEGUARD_*`) and an optional TOML file, validated once.
//!
//! Precedence: environment > TOML file (`CHANGEGUARD_CONFIG`, default `changeguard.toml` if present)
//! > built-in defaults. Secrets are held in [`SecretString`] so they never reach a log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything `changeguard serve` needs, validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `sqlite:changeguard.db` (default) or `postgres://…`.
    pub database_url: String,
    pub listen: SocketAddr,
    /// A second address that serves `GET /metrics` alone, without a token, for a Prometheus on
    /// the operations network (e.g. `127.0.0.1:9464`). Unset: metrics only on `listen`, to a
    /// bearer of `ops.metrics`.
    pub metrics_listen: Option<SocketAddr>,
    pub policies_dir: PathBuf,
    /// At least 256 random bits, as 64 hex characters or base64. Unset: kept in a key file.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// Key of the audit chain's MAC. Unset: kept in a key file.
    #[serde(skip_serializing)]
    pub audit_key: Option<SecretString>,
    /// The admission gate's Ed25519 signing key (32-byte seed, hex or base64). Unset: kept in
    /// the key file `changeguard.gate.key`.
    #[serde(skip_serializing)]
    pub gate_key: Option<SecretString>,
    /// Master key of the credential vault (256 bits, hex or base64). Unset: kept in the key file
    /// `changeguard.master.key`, generated on the first start. Never stored in the database.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
    /// The next master key while `changeguard keys rotate` runs (instances then read both).
    #[serde(skip_serializing)]
    pub master_key_next: Option<SecretString>,
    /// Password of the `admin` user created on the first start with no users.
    #[serde(skip_serializing)]
    pub bootstrap_admin_password: Option<SecretString>,
    /// Where generated key files live. Default: beside the SQLite file, or the working directory.
    pub key_dir: Option<PathBuf>,
    /// The append-only file of signed audit checkpoints. Default:
    /// `changeguard.audit-checkpoints.jsonl` in the key directory.
    pub audit_checkpoints: Option<PathBuf>,
    /// The Ed25519 seed (32 bytes, hex or base64) that signs audit checkpoints. Unset: kept in
    /// the key file `changeguard.checkpoint.key`.
    #[serde(skip_serializing)]
    pub audit_checkpoint_key: Option<SecretString>,
    /// Lifetime of an access token, in seconds.
    pub token_ttl_secs: u64,
    /// How many password hashes may run at once (each uses one core for ~20 ms).
    pub hash_concurrency: Option<usize>,
    /// Keep what a request read about its session while nothing changed it (see
    /// `auth::sessions`). `false`: every request reads the database.
    pub session_cache: bool,
    /// Proxies (comma-separated CIDRs, e.g. `10.0.0.5/32,10.1.0.0/16`) whose `X-Forwarded-For`
    /// names the client. From any other peer the header is ignored. Default: none.
    pub trusted_proxies: Option<String>,
    /// Base URL that links in e-mails and feeds point at, e.g. `https://changeguard.bank.local`.
    pub public_url: Option<String>,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// The bank's mail server in lettre's URL form: `smtp://host:25` (plain, a local relay),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`.
    /// Unset: each message is written as an `.eml` file into `outbox_dir`.
    #[serde(skip_serializing)]
    pub smtp_url: Option<SecretString>,
    /// Sender of the notices, e.g. `changeguard <changeguard@bank.local>`.
    pub mail_from: String,
    /// Where `.eml` files go when no SMTP server is configured.
    pub outbox_dir: PathBuf,
    /// Language of the notices: `zh` (default) or `en`.
    pub mail_language: String,
    /// Email templates (`email/{zh,en}/*.{txt,html}`). Default: `templates` beside the policies.
    pub templates_dir: Option<PathBuf>,
    /// The bank's directory for sign-in (LDAP / Active Directory): `ldaps://dc1.bank.local` or
    /// `ldap://dc1.bank.local` (StartTLS, unless `ldap_tls` is `off`). Unset: no directory
    /// sign-in (`policies/directory.toml` is still checked).
    pub ldap_url: Option<String>,
    /// `on` (default: StartTLS on `ldap://`) or `off` (plain LDAP, e.g. a lab; set explicitly).
    pub ldap_tls: String,
    /// PEM file of the CA(s) that signed the directory's certificate. Default: the system's.
    pub ldap_ca_file: Option<PathBuf>,
    /// The service account that searches the directory, e.g.
    /// `CN=svc-changeguard,OU=Service,DC=bank,DC=local`.
    pub ldap_bind_dn: Option<String>,
    /// Its password (or `ldap_bind_password_file`).
    #[serde(skip_serializing)]
    pub ldap_bind_password: Option<SecretString>,
    /// A file holding the service account's password (trailing newline ignored).
    pub ldap_bind_password_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "sqlite:changeguard.db".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            policies_dir: PathBuf::from("policies"),
            jwt_secret: None,
            audit_key: None,
            gate_key: None,
            master_key: None,
            master_key_next: None,
            bootstrap_admin_password: None,
            key_dir: None,
            audit_checkpoints: None,
            audit_checkpoint_key: None,
            token_ttl_secs: 900,
            hash_concurrency: None,
            session_cache: true,
            trusted_proxies: None,
            public_url: None,
            log_format: "text".into(),
            smtp_url: None,
            mail_from: "changeguard <changeguard@localhost>".into(),
            outbox_dir: PathBuf::from("outbox"),
            mail_language: "zh".into(),
            templates_dir: None,
            ldap_url: None,
            ldap_tls: "on".into(),
            ldap_ca_file: None,
            ldap_bind_dn: None,
            ldap_bind_password: None,
            ldap_bind_password_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads defaults, then the TOML file, then `CHANGEGUARD_*` variables; validates the result.
    pub fn load() -> Result<Settings, ConfigError> {
        let file = std::env::var_os("CHANGEGUARD_CONFIG").map(PathBuf::from);
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match &file {
            Some(path) if !path.exists() => {
                return Err(ConfigError(format!(
                    "CHANGEGUARD_CONFIG names {} which does not exist",
                    path.display()
                )));
            }
            Some(path) => fig = fig.merge(Toml::file(path)),
            None => fig = fig.merge(Toml::file("changeguard.toml")),
        }
        let fig = fig.merge(Env::prefixed("CHANGEGUARD_").ignore(&[
            "config",
            "log",
            "test_postgres_url",
            "test_mysql_url",
        ]));
        let settings: Settings = fig.extract().map_err(|e| ConfigError(one_line(&e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The trusted proxies' networks.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let Some(list) = &self.trusted_proxies else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "CHANGEGUARD_TRUSTED_PROXIES: {s:?} is not an address or CIDR"
                        ))
                    })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "CHANGEGUARD_DATABASE_URL must start with sqlite: or postgres://".into(),
            ));
        }
        if !(60..=86_400).contains(&self.token_ttl_secs) {
            return Err(ConfigError(
                "CHANGEGUARD_TOKEN_TTL_SECS must be between 60 and 86400".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError(
                "CHANGEGUARD_LOG_FORMAT must be text or json".into(),
            ));
        }
        if let Some(0) = self.hash_concurrency {
            return Err(ConfigError(
                "CHANGEGUARD_HASH_CONCURRENCY must be at least 1".into(),
            ));
        }
        self.trusted_proxy_nets()?;
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(
                "CHANGEGUARD_PUBLIC_URL must start with http:// or https://".into(),
            ));
        }
        if !matches!(self.mail_language.as_str(), "zh" | "en") {
            return Err(ConfigError(
                "CHANGEGUARD_MAIL_LANGUAGE must be zh or en".into(),
            ));
        }
        if self.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError(
                "CHANGEGUARD_MAIL_FROM must be an address such as changeguard@bank.local or \"changeguard <changeguard@bank.local>\"".into(),
            ));
        }
        crate::directory::config::validate_settings(self)?;
        if let Some(url) = &self.smtp_url {
            use secrecy::ExposeSecret as _;
            let url = url.expose_secret();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(ConfigError(format!(
                    "CHANGEGUARD_SMTP_URL must start with smtp:// or smtps:// (got {})",
                    redact_url(url)
                )));
            }
        }
        Ok(())
    }

    /// Email templates directory: the setting, else `templates` beside the policies folder,
    /// else `./templates`.
    pub fn templates_dir(&self) -> PathBuf {
        if let Some(d) = &self.templates_dir {
            return d.clone();
        }
        match self.policies_dir.parent().map(|p| p.join("templates")) {
            Some(d) if d.join("email").is_dir() => d,
            _ => PathBuf::from("templates"),
        }
    }

    /// True when the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// Directory for generated key files: `key_dir`, else beside the SQLite file, else `.`.
    pub fn key_dir(&self) -> PathBuf {
        if let Some(dir) = &self.key_dir {
            return dir.clone();
        }
        if let Some(path) = sqlite_path(&self.database_url) {
            let parent = Path::new(&path).parent().map(Path::to_path_buf);
            return match parent {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => PathBuf::from("."),
            };
        }
        PathBuf::from(".")
    }

    /// The audit checkpoint file: `audit_checkpoints`, else beside the key files.
    pub fn audit_checkpoints(&self) -> PathBuf {
        self.audit_checkpoints
            .clone()
            .unwrap_or_else(|| self.key_dir().join(crate::audit::checkpoint::FILE))
    }

    /// Base URL for links; defaults to the listen address.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Concurrent password hashes: half the cores (at least one), so the runtime keeps a core.
    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 2).max(1)
        })
    }
}

/// The file path of a `sqlite:` URL, without query string.
pub fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(path.to_string())
}

/// A URL with its password (and user) hidden, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid URL>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => format!("{scheme}://{authority}{tail}"),
    }
}

fn one_line(e: &figment::Error) -> String {
    e.to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:changeguard.db").as_deref(),
            Some("changeguard.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/cg/x.db?mode=rwc").as_deref(),
            Some("/var/lib/cg/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[test]
    fn key_dir_beside_the_database() {
        let s = Settings {
            database_url: "sqlite:/var/lib/cg/cg.db".into(),
            ..Settings::default()
        };
        assert_eq!(s.key_dir(), PathBuf::from("/var/lib/cg"));
        assert_eq!(Settings::default().key_dir(), PathBuf::from("."));
    }

    #[test]
    fn smtp_passwords_are_redacted() {
        assert_eq!(
            redact_url("smtp://cg:s3cret@mail.bank.local:587?tls=required"),
            "smtp://***@mail.bank.local:587?tls=required"
        );
        assert_eq!(redact_url("smtp://relay:25"), "smtp://relay:25");
        assert!(!redact_url("smtps://a:p@w@h:465").contains("p@w"));
    }

    #[test]
    fn bad_values_are_refused() {
        let s = Settings {
            database_url: "mysql://x".into(),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            token_ttl_secs: 5,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
