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
pub mod error;
pub mod gate;
pub mod http;
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
        let (vault, vault_new) = vault::Keyring::start(&settings, &db, clock.now()).await?;
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
        let app = App(Arc::new(AppInner {
            tokens: Tokens::new(&jwt_key),
            sealer: Sealer::new(audit_key),
            hasher,
            policies,
            db,
            clock,
            calendar_cache: Default::default(),
            sessions: auth::sessions::SessionCache::new(settings.session_cache),
            notifier,
            vault,
            admission,
            settings,
        }));
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
        Ok(app)
    }
}

/// Verifies the audit trail with nothing but the database and the audit key: no migration, no
/// first admin, no vault key, no key file created (`changeguard audit verify`, for an auditor
/// holding a copy of the database and the key).
pub async fn verify_audit_trail(settings: &Settings) -> anyhow::Result<audit::Verification> {
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
    let verification = db::audit::verify(&db, &Sealer::new(key)).await?;
    db.close().await;
    Ok(verification)
}

/// A running HTTP server.
pub struct Server {
    pub app: App,
    listener: TcpListener,
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
        let app = App::start_with_clock(settings, clock).await?;
        Ok(Server { app, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
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
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        sender.abort();
        scheduler.abort();
        watcher.abort();
        self.app.db.close().await;
        Ok(())
    }
}
