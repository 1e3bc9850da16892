//! changeguard: guards changes to a bank's production systems.
//!
//! The library builds the whole application from [`config::Settings`] and a bound
//! `TcpListener` ([`Server::build`]), so tests start the real server on `127.0.0.1:0`.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]

pub mod accounts;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod calendar;
pub mod changes;
pub mod clock;
pub mod config;
pub mod db;
pub mod dbaccess;
pub mod deed;
pub mod directory;
pub mod error;
pub mod gate;
pub mod http;
pub mod inbox;
pub mod keys;
pub mod notify;
pub mod policy;
pub mod rbac;
pub mod service_accounts;
pub mod text;
pub mod vault;
pub mod webhooks;
pub mod workdays;

use std::ops::Deref;

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// across the runtime's worker threads, where glibc's malloc spends its time in arena locks
/// (measured: benches/RESULTS.md). Declared in the library so the service, its tests and its
/// benches run on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use crate::audit::Sealer;
use crate::auth::password::Hasher;
use crate::auth::token::Tokens;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::db::Db;
use crate::keys::{KeySource, load_or_create};
use crate::policy::Policies;

/// Shared state of one running instance. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub settings: Settings,
    pub db: Db,
    pub policies: Policies,
    pub sealer: Sealer,
    /// Where this process last left the audit chain, and its appends' turns
    /// ([`db::audit::ChainHead`]).
    pub chain: db::audit::ChainHead,
    pub tokens: Tokens,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
    pub calendar_cache: workdays::CalendarCache,
    /// Sessions read while nothing changed them (used only while the database is watched).
    pub sessions: auth::sessions::SessionCache,
    pub notifier: notify::Notifier,
    /// The credential vault's master keys.
    pub vault: vault::Keyring,
    /// The admission gate's signing key and published public keys.
    pub admission: gate::admission::AdmissionKeys,
    /// Where audit checkpoints go, and the key that signs them.
    pub checkpoints: audit::checkpoint::Checkpoints,
    /// How many refused writes of each person the trail still takes in this window.
    pub refusal_budget: audit::refusal_budget::RefusalBudget,
    /// The bank's directory for sign-in (`CHANGEGUARD_LDAP_URL`); `None`: off.
    pub directory: Option<directory::Directory>,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Loads policies and keys, connects, migrates, bootstraps the first admin.
    /// Prints (once) what a newcomer must know: generated keys and the admin password.
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        App::start_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`App::start`] on another clock: the library takes its time from the edge, as it takes
    /// its listener, so tests move time instead of sleeping. The shipped binary passes only
    /// [`SystemClock`]; nothing in its configuration sets the time.
    pub async fn start_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        let policies =
            Policies::load(&settings.policies_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let key_dir = settings.key_dir();
        let (jwt_key, jwt_new) = load_or_create(&KeySource {
            var: "CHANGEGUARD_JWT_SECRET",
            configured: settings.jwt_secret.as_ref(),
            file: key_dir.join("changeguard.jwt.key"),
        })?;
        let (audit_key, audit_new) = load_or_create(&KeySource {
            var: "CHANGEGUARD_AUDIT_KEY",
            configured: settings.audit_key.as_ref(),
            file: key_dir.join("changeguard.audit.key"),
        })?;
        if jwt_new || audit_new {
            tracing::warn!(
                dir = %key_dir.display(),
                "generated key files changeguard.jwt.key / changeguard.audit.key (owner-only); \
                 back them up with the database, and give several instances the same keys"
            );
        }
        let checkpoints = audit::checkpoint::Checkpoints {
            path: settings.audit_checkpoints(),
            signer: checkpoint_signer(&settings, true)?,
        };
        let db = Db::connect(&settings.database_url)
            .await
            .context("cannot connect to the database (CHANGEGUARD_DATABASE_URL)")?;
        db.migrate().await.context("database migration failed")?;
        // The database remembers the keys it was created with: a wrong or regenerated key
        // refuses to start, instead of sealing audit entries that can never verify.
        for (name, var, key) in [
            ("jwt", "CHANGEGUARD_JWT_SECRET", &jwt_key),
            ("audit", "CHANGEGUARD_AUDIT_KEY", &audit_key),
        ] {
            let fp = keys::fingerprint(key);
            let recorded = db::keys::remember(&db, name, &fp, clock.now()).await?;
            if recorded != fp {
                anyhow::bail!(
                    "{var} (or changeguard.{name}.key in {}) is not the key this database was created with; \
                     restore the original key from your backup. Nothing was changed.",
                    key_dir.display()
                );
            }
        }
        // The vault's master key: never in the database; a wrong or missing one stops here.
        let vault::keyring::Started {
            ring: vault,
            created: vault_new,
            interrupted,
        } = vault::Keyring::start(&settings, &db, clock.now()).await?;
        if vault_new {
            tracing::warn!(
                dir = %key_dir.display(),
                "generated the credential vault's master key file changeguard.master.key (owner-only); \
                 back it up SEPARATELY from the database: without it no stored credential can be read"
            );
        }
        let max_window = chrono::TimeDelta::days(i64::from(policies.change.max_window_days));
        let (admission, admission_new) =
            gate::admission::AdmissionKeys::load(&settings, max_window)?;
        if admission_new {
            tracing::warn!(
                dir = %key_dir.display(),
                "generated the admission gate's signing key file changeguard.gate.key (owner-only); \
                 give several instances the same file"
            );
        }
        let hasher = Hasher::new(settings.hash_concurrency())?;
        let notifier = notify::Notifier::new(&settings)?;
        // Said once, so a newcomer knows where the notices go.
        tracing::info!(transport = %notifier.describe, "email notices: sending through {}", notifier.describe);
        if matches!(notifier.transport, notify::worker::Transport::File(_)) {
            eprintln!(
                "邮件通知未配置 SMTP，写入 {} / no CHANGEGUARD_SMTP_URL: email notices are written as .eml files into {}",
                settings.outbox_dir.display(),
                settings.outbox_dir.display()
            );
        }
        let directory = directory::config::connection(&settings).map_err(anyhow::Error::new)?;
        if directory.is_some() && policies.directory.user_base.trim().is_empty() {
            anyhow::bail!(
                "CHANGEGUARD_LDAP_URL is set: policies/directory.toml must name user_base (where people are searched)"
            );
        }
        if directory
            .as_ref()
            .is_some_and(|c| c.transport == directory::config::Transport::Plain)
        {
            tracing::warn!(
                "目录连接未加密（CHANGEGUARD_LDAP_TLS=off），密码以明文传输 / CHANGEGUARD_LDAP_TLS=off: directory passwords cross the network in the clear"
            );
        }
        let directory = directory.map(directory::Directory::new);
        let app = App(Arc::new(AppInner {
            directory,
            tokens: Tokens::new(&jwt_key),
            sealer: Sealer::new(audit_key),
            chain: Default::default(),
            hasher,
            policies,
            db,
            clock,
            calendar_cache: Default::default(),
            sessions: auth::sessions::SessionCache::new(settings.session_cache),
            notifier,
            vault,
            admission,
            checkpoints,
            refusal_budget: Default::default(),
            settings,
        }));
        if let Some(interrupted) = interrupted {
            vault::rotate::finish_interrupted(&app, interrupted).await?;
        }
        if let Some(password) =
            accounts::bootstrap_admin(&app, app.settings.bootstrap_admin_password.as_ref())
                .await
                .map_err(|e| anyhow::anyhow!("creating the first admin: {e}"))?
        {
            // Printed once, to the console only, never to the log.
            println!(
                "首次启动：已创建管理员 admin，初始密码 / first start: created user admin with password: {password}"
            );
        }
        // A directory that does not answer at start-up is a warning: local accounts still work.
        if directory::reachable(&app).await == Some(false) {
            tracing::warn!(
                "目录服务不可用，目录用户暂时无法登录 / the directory does not answer at start-up: directory users cannot sign in until it does"
            );
        }
        for (user, a, b) in accounts::incompatible_holdings(&app)
            .await
            .map_err(|e| anyhow::anyhow!("checking incompatible duties: {e}"))?
        {
            tracing::warn!(
                user, role = %a, other = %b,
                "不相容职责：该用户同时持有两个不相容的角色，请撤销其一 / incompatible duties: this user holds two incompatible roles; revoke one"
            );
        }
        Ok(app)
    }
}

/// The audit checkpoint signing key: configured, else the key file (created if `create`).
fn checkpoint_signer(
    settings: &Settings,
    create: bool,
) -> anyhow::Result<audit::checkpoint::CheckpointSigner> {
    let src = KeySource {
        var: "CHANGEGUARD_AUDIT_CHECKPOINT_KEY",
        configured: settings.audit_checkpoint_key.as_ref(),
        file: settings.key_dir().join(audit::checkpoint::KEY_FILE),
    };
    let key = if create {
        let (key, created) = load_or_create(&src)?;
        if created {
            tracing::warn!(
                dir = %settings.key_dir().display(),
                "generated the audit checkpoint signing key file {} (owner-only); give several \
                 instances the same file, and keep a copy off this machine",
                audit::checkpoint::KEY_FILE
            );
        }
        key
    } else {
        keys::load_existing(&src)?
    };
    audit::checkpoint::CheckpointSigner::from_key(&key)
        .ok_or_else(|| anyhow::anyhow!("CHANGEGUARD_AUDIT_CHECKPOINT_KEY must be 32 bytes"))
}

impl App {
    /// Verifies the audit trail and compares it with this instance's checkpoint file.
    pub async fn verify_audit(&self) -> db::Result<audit::Verification> {
        audit::checkpoint::verify(
            &self.db,
            &self.sealer,
            &self.checkpoints.path,
            &self.checkpoints.signer.verifier(),
        )
        .await
    }
}

/// Which checkpoints `changeguard audit verify` compares the trail with, and how it checks
/// their signatures.
pub struct CheckpointCheck {
    /// The file; `None`: the configured one (`CHANGEGUARD_AUDIT_CHECKPOINTS`), if it exists.
    pub file: Option<std::path::PathBuf>,
    /// The signing key's public half (hex); `None`: derived from the signing key
    /// (`CHANGEGUARD_AUDIT_CHECKPOINT_KEY` or its key file).
    pub public_key: Option<String>,
}

/// The database (read-only) and the audit key, with nothing else: no migration, no first
/// admin, no vault key, no key file created.
async fn open_for_audit(settings: &Settings) -> anyhow::Result<(Db, Sealer)> {
    if let Some(path) = config::sqlite_path(&settings.database_url)
        && !std::path::Path::new(&path).exists()
    {
        anyhow::bail!("no database at {path} (CHANGEGUARD_DATABASE_URL)");
    }
    let key_dir = settings.key_dir();
    let key = keys::load_existing(&KeySource {
        var: "CHANGEGUARD_AUDIT_KEY",
        configured: settings.audit_key.as_ref(),
        file: key_dir.join("changeguard.audit.key"),
    })?;
    let db = Db::connect_read_only(&settings.database_url)
        .await
        .context("cannot connect to the database (CHANGEGUARD_DATABASE_URL)")?;
    // A wrong key would make every entry look forged: say what is wrong instead.
    if let Some(recorded) = db::keys::recorded(&db, "audit").await?
        && recorded != keys::fingerprint(&key)
    {
        anyhow::bail!(
            "CHANGEGUARD_AUDIT_KEY (or changeguard.audit.key in {}) is not the key this database \
             was created with",
            key_dir.display()
        );
    }
    Ok((db, Sealer::new(key)))
}

/// Verifies the audit trail with nothing but the database and the audit key (`changeguard
/// audit verify`, for an auditor holding a copy of the database and the key), and compares it
/// with the checkpoints of `check`. Returns the checkpoint file compared, if any.
pub async fn verify_audit_trail(
    settings: &Settings,
    check: &CheckpointCheck,
) -> anyhow::Result<(audit::Verification, Option<std::path::PathBuf>)> {
    let file = match &check.file {
        Some(f) if !f.exists() => anyhow::bail!("no checkpoint file at {}", f.display()),
        Some(f) => Some(f.clone()),
        None => Some(settings.audit_checkpoints()).filter(|f| f.exists()),
    };
    let verifier = match (&file, &check.public_key) {
        (None, _) => None,
        (Some(_), Some(hex)) => Some(
            audit::checkpoint::CheckpointVerifier::from_hex(hex).ok_or_else(|| {
                anyhow::anyhow!("the checkpoint public key must be 64 hex digits (32 bytes)")
            })?,
        ),
        (Some(_), None) => Some(checkpoint_signer(settings, false)?.verifier()),
    };
    let (db, sealer) = open_for_audit(settings).await?;
    let verification = match (&file, &verifier) {
        (Some(f), Some(v)) => audit::checkpoint::verify(&db, &sealer, f, v).await?,
        _ => db::audit::verify(&db, &sealer).await?,
    };
    db.close().await;
    Ok((verification, file))
}

/// `changeguard audit checkpoint`: verifies the trail against the checkpoint file and, intact,
/// appends a checkpoint of its head (read-only on the database).
pub async fn write_audit_checkpoint(
    settings: &Settings,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<
    Result<(audit::checkpoint::Checkpoint, std::path::PathBuf, String), audit::Verification>,
> {
    let checkpoints = audit::checkpoint::Checkpoints {
        path: file.unwrap_or_else(|| settings.audit_checkpoints()),
        signer: checkpoint_signer(settings, false)?,
    };
    let (db, sealer) = open_for_audit(settings).await?;
    let r = checkpoints.write(&db, &sealer, chrono::Utc::now()).await;
    db.close().await;
    match r {
        Ok((c, _)) => Ok(Ok((
            c,
            checkpoints.path,
            checkpoints.signer.verifier().public_hex(),
        ))),
        Err(audit::checkpoint::CheckpointError::Broken(v)) => Ok(Err(*v)),
        Err(e) => Err(e.into()),
    }
}

/// A running HTTP server.
pub struct Server {
    pub app: App,
    listener: TcpListener,
    /// `metrics_listen`, bound: `GET /metrics` alone, without a token.
    metrics_listener: Option<TcpListener>,
}

impl Server {
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Server> {
        Server::build_with_clock(settings, listener, Arc::new(SystemClock)).await
    }

    /// [`Server::build`] on another clock (tests); see [`App::start_with_clock`].
    pub async fn build_with_clock(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics): {e}"))?,
            ),
            None => None,
        };
        let app = App::start_with_clock(settings, clock).await?;
        Ok(Server {
            app,
            listener,
            metrics_listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `GET /metrics` is served without a token, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = http::router(self.app.clone())?;
        let sender = notify::worker::spawn(self.app.clone());
        let scheduler = notify::schedule::spawn(self.app.clone());
        let watcher = db::watch::spawn(&self.app.db);
        let metrics = self.metrics_listener.map(|l| {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, http::metrics_router()).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            })
        });
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        sender.abort();
        scheduler.abort();
        watcher.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        self.app.db.close().await;
        Ok(())
    }
}
