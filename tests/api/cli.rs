//! The command line: policies check, user create, bad configuration.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::shipped_policies;
use crate::rbac::copy_dir;

fn changeguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_changeguard"));
    c.env_remove("CHANGEGUARD_JWT_SECRET")
        .env_remove("CHANGEGUARD_DATABASE_URL");
    c
}

#[test]
fn policies_check_passes_on_the_shipped_policies() {
    let out = changeguard()
        .args(["policies", "check"])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("policies OK"));
}

#[test]
fn policies_check_names_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_policies(), dir.path());
    let file = dir.path().join("rbac/roles.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replacen("Action::\"user.read\"", "Action::\"user.reed\"", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("user.reed"))
        .unwrap()
        + 1;
    std::fs::write(&file, broken).unwrap();
    let out = changeguard()
        .args(["policies", "check"])
        .env("CHANGEGUARD_POLICIES_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("roles.cedar:{line}:")), "{err}");
    assert!(err.contains("user.reed"), "{err}");

    // The server refuses to start on the same files, with the same line.
    let db = dir.path().join("cg.db");
    let out = changeguard()
        .args(["serve"])
        .env("CHANGEGUARD_POLICIES_DIR", dir.path())
        .env(
            "CHANGEGUARD_DATABASE_URL",
            format!("sqlite:{}", db.display()),
        )
        .env("CHANGEGUARD_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("roles.cedar:{line}:")));
    assert!(!db.exists(), "nothing was touched");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line() {
    for (var, value, needle) in [
        (
            "CHANGEGUARD_JWT_SECRET",
            "too-short",
            "CHANGEGUARD_JWT_SECRET must be at least 256 random bits",
        ),
        ("CHANGEGUARD_LISTEN", "not an address", "LISTEN"),
        (
            "CHANGEGUARD_DATABASE_URL",
            "mysql://x",
            "CHANGEGUARD_DATABASE_URL",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = changeguard()
            .args(["serve"])
            .current_dir(dir.path())
            .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
            .env("CHANGEGUARD_LISTEN", "127.0.0.1:0")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<_> = err
            .lines()
            .filter(|l| l.starts_with("changeguard:"))
            .collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(needle), "{err}");
    }
}

#[test]
fn user_create_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("cg.db").display());
    let mut child = changeguard()
        .args([
            "user",
            "create",
            "--username",
            "op.zhao",
            "--display-name",
            "赵六",
            "--department",
            "科技部",
            "--email",
            "zhao@bank.example",
            "--role",
            "tech_operator",
        ])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .env("CHANGEGUARD_DATABASE_URL", &db)
        .env(
            "CHANGEGUARD_BOOTSTRAP_ADMIN_PASSWORD",
            "bootstrap secret for tests",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long passphrase for zhao\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user op.zhao"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("a long passphrase for zhao"),
        "the password is never printed"
    );
}

#[test]
fn calendar_earliest_start_from_the_command_line() {
    let out = changeguard()
        .args([
            "calendar",
            "earliest-start",
            "2026-11-23",
            "2026-09-30",
            "2026-12-29",
            "nonsense",
        ])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .env(
            "CHANGEGUARD_DATABASE_URL",
            "postgres://nowhere.invalid/none",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "2026-11-23\t2026-11-27");
    assert_eq!(lines[1], "2026-09-30\t2026-10-11");
    assert!(
        lines[2].starts_with("2026-12-29\terror: ") && lines[2].contains("2027"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("nonsense\terror: "), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed date makes the exit status non-zero"
    );

    let out = changeguard()
        .args(["calendar", "earliest-start", "2026-11-27"])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2026-11-27\t2026-12-03\n"
    );
}

#[test]
fn calendar_show_marks_days_off_and_makeup_days() {
    let out = changeguard()
        .args(["calendar", "show", "2026-10"])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2026年10月"), "{text}");
    assert!(text.contains("国庆"), "{text}");
    assert!(text.contains('*') && text.contains('+'), "{text}");
    let out = changeguard()
        .args(["calendar", "show", "2031-01"])
        .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2031"));
}

#[test]
fn keys_status_and_rotate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("cg.db").display());
    let run = |args: &[&str]| {
        changeguard()
            .args(args)
            .env("CHANGEGUARD_POLICIES_DIR", shipped_policies())
            .env("CHANGEGUARD_DATABASE_URL", &db)
            .env(
                "CHANGEGUARD_BOOTSTRAP_ADMIN_PASSWORD",
                "bootstrap secret for tests",
            )
            .env_remove("CHANGEGUARD_MASTER_KEY")
            .output()
            .unwrap()
    };
    let out = run(&["keys", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    let first = status.split('\t').next().unwrap().to_string();
    assert!(status.contains("\tcurrent\t0 secrets"), "{status}");
    // Generated beside the database, owner-only, and announced.
    let key = dir.path().join("changeguard.master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("changeguard.master.key"));
    let out = run(&["keys", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("{first}\tretired")), "{text}");
    assert!(text.contains("\tcurrent\t"), "{text}");
    assert!(
        dir.path()
            .join(format!("changeguard.master.key.retired-{first}"))
            .exists()
    );
    // The new key file starts the service; the retired one would not.
    let out = run(&["keys", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real binary, everything logged (`CHANGEGUARD_LOG=trace`), through a sign-in, a failed
/// sign-in, a new user and a stored credential: no password, token, hash or secret reaches the
/// log or the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_password = "a first passphrase for the whole bank";
    let jwt_secret = crate::harness::JWT_SECRET_HEX;
    // Into files: a pipe nobody reads while the test runs would fill and stall the server.
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let policies = crate::harness::without_second_factor_at_login(&shipped_policies(), logs.path());
    let mut child = changeguard()
        .arg("serve")
        .current_dir(dir.path())
        .env("CHANGEGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("CHANGEGUARD_POLICIES_DIR", &policies)
        .env(
            "CHANGEGUARD_TEMPLATES_DIR",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
        .env("CHANGEGUARD_BOOTSTRAP_ADMIN_PASSWORD", admin_password)
        .env("CHANGEGUARD_JWT_SECRET", jwt_secret)
        .env("CHANGEGUARD_LOG", "trace")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let start = std::time::Instant::now();
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the server stopped: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never ready: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let login = |password: &'static str| {
        client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
    };
    let wrong = "a wrong passphrase typed by mistake";
    assert_eq!(login(wrong).await.unwrap().status(), 401);
    let ok: serde_json::Value = login(admin_password).await.unwrap().json().await.unwrap();
    let token = ok["access_token"].as_str().unwrap().to_string();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let user_password = "a new operator's passphrase";
    let r = post(
        "/api/v1/users",
        serde_json::json!({"username": "op.log", "display_name": "日志", "department": "科技部",
                           "email": "op.log@bank.example", "password": user_password}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/api/v1/systems",
        serde_json::json!({"key": "core-db", "name": "核心库", "owner_department": "科技部"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let secret = "Sup3r-Secret-DB-Password!";
    let r = post(
        "/api/v1/credentials",
        serde_json::json!({"name": "核心库 DBA", "system": "core-db", "account": "dba",
                           "kind": "password", "secret": secret, "rotation_days": 90}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    child.kill().unwrap();
    child.wait().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()),
        String::from_utf8_lossy(&std::fs::read(&err_path).unwrap())
    );
    assert!(printed.contains("changeguard listening"), "{printed}");
    assert!(printed.contains("POST"), "requests are logged: {printed}");
    for (what, needle) in [
        ("admin password", admin_password),
        ("wrong password", wrong),
        ("new user's password", user_password),
        ("credential secret", secret),
        ("access token", token.as_str()),
        ("JWT secret", jwt_secret),
        ("argon2 hash", "$argon2id$"),
    ] {
        assert!(!printed.contains(needle), "the {what} was printed");
    }
    // Nor the generated key files' contents.
    for file in ["changeguard.audit.key", "changeguard.master.key"] {
        let key = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(!printed.contains(key.trim()), "{file} was printed");
    }
}

#[test]
fn policies_check_refuses_a_directory_mapping_that_would_weaken_the_rules() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "user_filter = \"(mail={username})\"\n",
            "user_filter",
            "(samaccountname={username})",
        ),
        (
            "[[groups]]\ngroup = \"operators\"\nroles = [\"tech_operator\"]\n",
            "\"operators\"",
            "group_base",
        ),
        (
            "[[groups]]\ngroup = \"cn=audit,ou=groups,dc=bank\"\nroles = [\"auditor\"]\n",
            "cn=audit",
            "grants roles",
        ),
        ("group_base = \"groups\"\n", "group_base", "is not a DN"),
        (
            "id_attribute = \"object GUID\"\n",
            "id_attribute",
            "not an LDAP attribute name",
        ),
    ];
    for (toml, at, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&shipped_policies(), dir.path());
        // Here an auditor may grant the viewer role: a role that grants roles.
        let roles = dir.path().join("roles.toml");
        let r = std::fs::read_to_string(&roles).unwrap();
        let r = r.replace(
            "[roles.auditor]\n",
            "[roles.auditor]\ngrantable = [\"viewer\"]\n",
        );
        std::fs::write(&roles, r).unwrap();
        let text = format!("# a comment first\n{toml}");
        std::fs::write(dir.path().join("directory.toml"), &text).unwrap();
        let line = text.lines().position(|l| l.contains(at)).unwrap() + 1;
        let out = changeguard()
            .args(["policies", "check"])
            .env("CHANGEGUARD_POLICIES_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("directory.toml:{line}:")),
            "{toml}: {err}"
        );
        assert!(err.contains(reason), "{toml}: {err}");
    }
}
