//! The `changeguard` command: thin — parse the command line, load configuration, call the library.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use changeguard::config::Settings;
use changeguard::{App, Server, accounts, db, policy};

#[derive(Parser)]
#[command(
    name = "changeguard",
    version,
    about = "变更管控服务 / Guards changes to a bank's production systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (migrations are applied first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The bank's policy files.
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// The credential vault's master key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The admission gate, offline.
    Gate {
        #[command(subcommand)]
        command: GateCommand,
    },
    /// The working-day calendar of policies/calendars (no database or server needed).
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
}

#[derive(Subcommand)]
enum GateCommand {
    /// Verifies an admission token with the gate's public keys only (no server needed): exit 0
    /// and the change it admits, or exit 1 and why not.
    Verify {
        /// The JWK Set, as served at /.well-known/jwks.json.
        #[arg(long)]
        jwks: std::path::PathBuf,
        /// The system about to be changed.
        #[arg(long)]
        system: String,
        /// Refuse an admission for a change of another category.
        #[arg(long)]
        category: Option<String>,
        /// The admission token; `-` (or nothing) reads it from standard input, which keeps it
        /// out of the process list.
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum CalendarCommand {
    /// For each notice date, the earliest permitted start: `NOTICE<TAB>EARLIEST` per line.
    EarliestStart {
        /// Notice dates, YYYY-MM-DD.
        #[arg(required = true)]
        dates: Vec<String>,
    },
    /// A month as a small calendar, days off and make-up working days marked.
    Show {
        /// YYYY-MM
        month: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        department: String,
        #[arg(long)]
        email: String,
        /// Roles to grant at once (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole chain and compare it with every signed checkpoint; exit status 1 names
    /// the first bad entry and lists every finding.
    Verify {
        /// The checkpoint file (default: CHANGEGUARD_AUDIT_CHECKPOINTS, compared when it exists).
        #[arg(long)]
        checkpoints: Option<std::path::PathBuf>,
        /// Check the checkpoints' signatures with this public key (64 hex digits, as
        /// `audit checkpoint` prints it) instead of the signing key.
        #[arg(long)]
        checkpoint_public_key: Option<String>,
    },
    /// Verify the chain against the checkpoint file and, intact, append a signed checkpoint of
    /// its head (seq and MAC); exit status 1 if it does not verify (nothing written).
    Checkpoint {
        /// The checkpoint file (default: CHANGEGUARD_AUDIT_CHECKPOINTS).
        #[arg(long)]
        checkpoints: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Which master keys the database knows and how many secrets each one wraps.
    Status,
    /// Re-wrap every data key under a new master key (a batch per transaction; running
    /// instances keep serving). The new key comes from CHANGEGUARD_MASTER_KEY_NEXT, else a new
    /// key file that replaces changeguard.master.key at the end (the old one is kept aside).
    Rotate,
    /// Retire the admission gate's signing key: restart the instances to sign with a new one.
    /// The old public key stays published (JWKS) as long as a change window may last.
    RotateGate,
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Validate every file under the policies directory.
    Check,
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CHANGEGUARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: a log file or a journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `changeguard gate verify`: 0 admitted, 1 refused (with the reason), 2 unreadable input.
fn gate_verify(
    jwks: &std::path::Path,
    system: &str,
    category: Option<&str>,
    token: &str,
) -> ExitCode {
    use changeguard::gate::admission;
    let keys: admission::Jwks = match std::fs::read_to_string(jwks)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => return fail(format!("cannot read the JWKS {}: {e}", jwks.display())),
    };
    match admission::verify(&keys, token.trim(), system, category, chrono::Utc::now()) {
        Ok(c) => {
            println!(
                "admitted: change #{} on {} ({}{}), assignee {}, until {}",
                c.sub,
                c.systems.join(", "),
                c.category,
                c.action.map(|a| format!("/{a}")).unwrap_or_default(),
                c.assignee,
                chrono::DateTime::from_timestamp(c.exp, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("refused: {e}");
            ExitCode::from(1)
        }
    }
}

/// The result of `audit verify`: one line, then every finding.
fn print_verification(v: &changeguard::audit::Verification, file: Option<&std::path::Path>) {
    if let Some(f) = file {
        println!(
            "compared with {} checkpoint(s) of {}",
            v.checkpoints,
            f.display()
        );
    }
    if v.ok {
        println!("audit chain OK: {} entries", v.entries);
        return;
    }
    match v.first_bad_entry {
        Some(seq) => println!(
            "audit chain BROKEN at entry {seq}: {} ({} entries verified)",
            v.reason.as_deref().unwrap_or_default(),
            v.entries
        ),
        None => println!(
            "audit trail BROKEN: {}",
            v.reason.as_deref().unwrap_or_default()
        ),
    }
    for f in &v.findings {
        let mut at = Vec::new();
        if let Some(seq) = f.seq {
            at.push(format!("entry {seq}"));
        }
        if let Some(line) = f.line {
            at.push(format!("line {line}"));
        }
        println!("  {} [{}]: {}", f.code, at.join(", "), f.reason);
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("changeguard: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    init_tracing(settings.log_format == "json");
    match run(cli.command, settings).await {
        Ok(code) => code,
        Err(e) => fail(format!("{e:#}")),
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gate {
            command:
                GateCommand::Verify {
                    jwks,
                    system,
                    category,
                    token,
                },
        } => {
            let token = match token.filter(|t| t != "-") {
                Some(t) => t,
                None => {
                    let mut t = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                    t
                }
            };
            Ok(gate_verify(&jwks, &system, category.as_deref(), &token))
        }
        Command::Keys {
            command: KeysCommand::RotateGate,
        } => {
            let retired = changeguard::gate::admission::rotate(&settings)?;
            println!(
                "gate key retired to {}; restart every instance to sign with the new key \
                 (the old public key stays in the JWKS while its admissions may be valid)",
                retired.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
            let server = Server::build(settings, listener).await?;
            tracing::info!(addr = %server.local_addr()?, "changeguard listening; API docs at /docs");
            server.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let db = db::Db::connect(&settings.database_url).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policies {
            command: PoliciesCommand::Check,
        } => match policy::Policies::load(&settings.policies_dir) {
            Ok(p) => {
                println!(
                    "policies OK: {} roles, {} permissions ({})",
                    p.roles.names().count(),
                    p.authorizer.actions().len(),
                    p.dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Calendar { command } => {
            let policies = match policy::Policies::load(&settings.policies_dir) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(1));
                }
            };
            let cal = changeguard::calendar::WorkingCalendar::new(policies.calendar_years.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match command {
                CalendarCommand::EarliestStart { dates } => {
                    let (text, all_ok) = changeguard::calendar::earliest_start_lines(
                        &cal,
                        &policies.change.notice,
                        &dates,
                    );
                    print!("{text}");
                    Ok(if all_ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                CalendarCommand::Show { month } => {
                    let parsed = month
                        .split_once('-')
                        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)));
                    let Some((y, m)) = parsed else {
                        eprintln!("changeguard: month must be YYYY-MM, got {month:?}");
                        return Ok(ExitCode::from(2));
                    };
                    match cal.render_month(y, m) {
                        Ok(text) => {
                            print!("{text}");
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(e) => {
                            eprintln!("changeguard: {e}");
                            Ok(ExitCode::from(1))
                        }
                    }
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    checkpoints,
                    checkpoint_public_key,
                },
        } => {
            let check = changeguard::CheckpointCheck {
                file: checkpoints,
                public_key: checkpoint_public_key,
            };
            let (v, file) = changeguard::verify_audit_trail(&settings, &check).await?;
            print_verification(&v, file.as_deref());
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Audit {
            command: AuditCommand::Checkpoint { checkpoints },
        } => match changeguard::write_audit_checkpoint(&settings, checkpoints).await? {
            Ok((c, file, public)) => {
                println!(
                    "checkpoint written to {}: entry {}, MAC {}, at {}",
                    file.display(),
                    c.seq,
                    c.mac,
                    c.at
                );
                println!("public key {public} (kid {})", c.kid);
                Ok(ExitCode::SUCCESS)
            }
            Err(v) => {
                print_verification(&v, None);
                println!("no checkpoint written: the trail does not verify");
                Ok(ExitCode::from(1))
            }
        },
        Command::Keys { command } => {
            let app = App::start(settings).await?;
            if let KeysCommand::Rotate = command {
                let r = changeguard::vault::rotate::rotate(&app).await?;
                println!(
                    "master key rotated: {} -> {}, {} data keys re-wrapped",
                    r.old_key_id, r.new_key_id, r.rewrapped
                );
                match r.retired_file {
                    Some(f) => println!(
                        "the new key is now changeguard.master.key; the old key was moved to {} \
                         (keep it with the backups made before this rotation, then destroy it). \
                         Back up the new key file now, separately from the database.",
                        f.display()
                    ),
                    None => println!(
                        "now set CHANGEGUARD_MASTER_KEY to the value of CHANGEGUARD_MASTER_KEY_NEXT on every \
                         instance and remove CHANGEGUARD_MASTER_KEY_NEXT"
                    ),
                }
            }
            let counts = db::vault::wrapped_counts(&app.db).await?;
            for k in db::vault::master_keys(&app.db).await? {
                let n = counts
                    .iter()
                    .find(|(id, _)| *id == k.key_id)
                    .map_or(0, |(_, n)| *n);
                println!("{}\t{}\t{} secrets", k.key_id, k.state, n);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Create {
                    username,
                    display_name,
                    department,
                    email,
                    roles,
                },
        } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = SecretString::from(password.trim_end_matches(['\n', '\r']).to_string());
            let app = App::start(settings).await?;
            let user = accounts::create_user(
                &app,
                None,
                accounts::CreateUser {
                    username,
                    display_name,
                    department,
                    email,
                    password,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            for role in roles {
                accounts::grant_role_unattended(&app, user.id, &role)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            println!("created user {} (id {})", user.username, user.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
