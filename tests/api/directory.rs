//! Directory sign-in against a real OpenLDAP (`slapd` started here on a free loopback port, mdb
//! backend, memberof overlay, StartTLS with a certificate made for the test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{Options, TestServer, body, copy_dir, problem};

const SUFFIX: &str = "dc=bank,dc=example";
const ROOT_DN: &str = "cn=admin,dc=bank,dc=example";
const ROOT_PW: &str = "directory root secret";
const ZHANG_PW: &str = "zhang's directory password";

/// A running slapd, stopped when dropped.
struct Slapd {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    let d = |f: &str| dir.join(f).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &d("server.key"),
        "-out",
        &d("server.csr"),
    ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &d("server.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &d("ext.cnf"),
        "-out",
        &d("server.pem"),
    ]));
}

impl Slapd {
    fn start(tls: bool) -> Slapd {
        let slapd = Path::new("/usr/sbin/slapd");
        if !slapd.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but /usr/sbin/slapd is missing: the directory tests must run in CI"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        let tls_conf = if tls {
            make_certs(dir.path());
            format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                p("ca.pem"),
                p("server.pem"),
                p("server.key")
            )
        } else {
            String::new()
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
             pidfile {pid}\n{tls_conf}\
             database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\n\
             rootpw \"{ROOT_PW}\"\ndirectory {data}\noverlay memberof\n",
            pid = p("slapd.pid"),
            data = p("data"),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(slapd)
            .args(["-d", "0", "-f", &p("slapd.conf"), "-h"])
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slapd starts");
        let mut s = Slapd {
            child: Some(child),
            port,
            dir,
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = s
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err);
                panic!("slapd exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "slapd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        s.modify(
            "add",
            &format!(
                "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: bank\no: Bank\n\n\
                 dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
                 dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
                 dn: uid=zhang.wei,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: zhang.wei\n\
                 cn: Zhang Wei\nsn: Zhang\ndisplayName: 张伟\ndepartmentNumber: 运维部\n\
                 mail: zhang.wei@bank.example\nuserPassword: {ZHANG_PW}\n\n\
                 dn: uid=li.na,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: li.na\n\
                 cn: Li Na\nsn: Li\ndisplayName: 李娜\ndepartmentNumber: 审计部\n\
                 mail: li.na@bank.example\nuserPassword: {ZHANG_PW}\n\n\
                 dn: cn=operators,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: operators\n\
                 member: cn=placeholder,{SUFFIX}\nmember: uid=zhang.wei,ou=people,{SUFFIX}\n\n\
                 dn: cn=auditors,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: auditors\n\
                 member: uid=zhang.wei,ou=people,{SUFFIX}\nmember: uid=li.na,ou=people,{SUFFIX}\n"
            ),
        );
        s
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldapadd` / `ldapmodify` / `ldapdelete` as the directory's root.
    fn modify(&self, how: &str, ldif: &str) {
        let file = self.dir.path().join("change.ldif");
        std::fs::write(&file, ldif).unwrap();
        let tool = match how {
            "add" => "ldapadd",
            _ => "ldapmodify",
        };
        let mut cmd = Command::new(tool);
        cmd.args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW, "-f"])
            .arg(&file);
        if self.tls {
            cmd.arg("-ZZ")
                .env("LDAPTLS_CACERT", self.dir.path().join("ca.pem"));
        }
        run(&mut cmd);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `directory.toml` for this OpenLDAP.
fn directory_toml() -> String {
    format!(
        "user_base = \"ou=people,{SUFFIX}\"\nuser_filter = \"(uid={{username}})\"\n\
         username_attribute = \"uid\"\nid_attribute = \"entryUUID\"\n\
         group_base = \"ou=groups,{SUFFIX}\"\n\
         department_attribute = \"departmentNumber\"\ndisabled_by = \"gone\"\n\n\
         [[groups]]\ngroup = \"cn=operators,ou=groups,{SUFFIX}\"\nroles = [\"tech_operator\"]\n\n\
         [[groups]]\ngroup = \"auditors\"\nroles = [\"auditor\"]\n"
    )
}

/// The shipped policies with `toml` as `directory.toml`, in `dir`.
fn policies(dir: &Path, toml: &str) -> PathBuf {
    let to = dir.join(format!("dir-policies-{}", uuid::Uuid::new_v4()));
    copy_dir(&crate::harness::shipped_policies(), &to);
    std::fs::write(to.join("directory.toml"), toml).unwrap();
    to
}

/// A second instance on `srv`'s database, signing in against `slapd`.
async fn with_directory(srv: &TestServer, slapd: &Slapd, tls: &str) -> TestServer {
    with_policy(srv, slapd, tls, &directory_toml(), false).await
}

/// [`with_directory`] with this `directory.toml`, and with the shipped second factor at login
/// when `second_factor` is set.
async fn with_policy(
    srv: &TestServer,
    slapd: &Slapd,
    tls: &str,
    toml: &str,
    second_factor: bool,
) -> TestServer {
    let url = slapd.url();
    let ca = slapd.tls.then(|| slapd.ca());
    let tls = tls.to_string();
    let opts = Options {
        policies: policies(srv.dir.path(), toml),
        second_factor_at_login: second_factor,
        settings: Some(Arc::new(move |s| {
            s.ldap_url = Some(url.clone());
            s.ldap_tls = tls.clone();
            s.ldap_ca_file = ca.clone();
            s.ldap_bind_dn = Some(ROOT_DN.into());
            s.ldap_bind_password = Some(SecretString::from(ROOT_PW));
        })),
        ..Options::default()
    };
    srv.second_instance_with(opts).await
}

async fn me(srv: &TestServer, token: &str) -> Value {
    let r = srv.get("/api/v1/me", token).await;
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await
}

async fn audited(srv: &TestServer, action: &str) -> Vec<Value> {
    let admin = srv.admin().await;
    let r = srv.get("/api/v1/audit?limit=500", &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc = body(r).await;
    doc.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

both_backends!(
    directory_sign_in_maps_groups_and_sync_takes_them_away,
    |first| {
        let slapd = Slapd::start(true);
        let srv = with_directory(first, &slapd, "on").await;

        // The wrong password, an injected filter, an empty password: refused alike.
        let r = srv.login("zhang.wei", "not the password").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let r = srv.login("*)(uid=*", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let r = srv.login("*", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let r = srv.login("zhang.wei", "").await;
        assert!(r.status().is_client_error(), "{}", r.status());

        // The right password: the account is made, with the directory's attributes and roles.
        let token = srv.token("zhang.wei", ZHANG_PW).await;
        let who = me(&srv, &token).await;
        assert_eq!(who["display_name"], "张伟", "{who}");
        assert_eq!(who["department"], "运维部", "{who}");
        assert_eq!(who["email"], "zhang.wei@bank.example", "{who}");
        let roles: Vec<String> = serde_json::from_value(who["roles"].clone()).unwrap();
        assert_eq!(roles, vec!["auditor", "tech_operator"], "{who}");
        let li = srv.token("li.na", ZHANG_PW).await;
        let li_id = me(&srv, &li).await["id"].as_i64().unwrap();

        // No local password for a directory account.
        let r = srv
            .post(
                "/api/v1/me/password",
                &token,
                json!({"current_password": ZHANG_PW, "new_password": "a brand new local password"}),
            )
            .await;
        problem(
            r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "directory_account_password",
        )
        .await;

        // An admin's grant stays whatever the directory says.
        let admin = srv.admin().await;
        srv.grant(&admin, li_id, &["viewer"]).await;

        // zhang.wei leaves the operators; li.na is removed from the directory.
        slapd.modify(
            "modify",
            &format!(
                "dn: cn=operators,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\n\
             member: uid=zhang.wei,ou=people,{SUFFIX}\n\n\
             dn: cn=auditors,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\n\
             member: uid=li.na,ou=people,{SUFFIX}\n\n\
             dn: uid=li.na,ou=people,{SUFFIX}\nchangetype: delete\n"
            ),
        );
        let synced = changeguard::directory::sync::run(&srv.app, srv.now())
            .await
            .unwrap();
        assert_eq!(synced.disabled, vec!["li.na".to_string()]);
        assert_eq!(
            synced.roles_removed,
            vec![("zhang.wei".to_string(), "tech_operator".to_string())]
        );
        // At once: the role is gone from the live session, li.na's session is over.
        let who = me(&srv, &token).await;
        assert_eq!(who["roles"], json!(["auditor"]), "{who}");
        let r = srv.get("/api/v1/me", &li).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = srv.login("li.na", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let r = srv.get(&format!("/api/v1/users/{li_id}"), &admin).await;
        let view = body(r).await;
        assert!(view.to_string().contains("viewer"), "{view}");
        assert!(!audited(first, "directory.sync.disable").await.is_empty());
        assert!(!audited(first, "directory.sync.roles").await.is_empty());
        assert!(!audited(first, "directory.sign_in").await.is_empty());

        // The directory down: its users 503, the local admin signs in, /readyz degraded.
        let r = srv.call(reqwest::Method::GET, "/readyz", None, None).await;
        assert_eq!(body(r).await["status"], "ready");
        let mut slapd = slapd;
        slapd.stop();
        let r = srv.login("zhang.wei", ZHANG_PW).await;
        let doc = problem(r, StatusCode::SERVICE_UNAVAILABLE, "directory_unavailable").await;
        assert!(doc["detail"].as_str().unwrap().starts_with("目录"), "{doc}");
        srv.admin().await;
        let r = srv.call(reqwest::Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let doc = body(r).await;
        assert_eq!(doc["status"], "degraded", "{doc}");
        assert_eq!(doc["directory"], "unavailable", "{doc}");
        srv.stop().await;
    }
);

both_backends!(starttls_is_required_unless_turned_off, |first| {
    let slapd = Slapd::start(false);
    let srv = with_directory(first, &slapd, "on").await;
    let r = srv.login("zhang.wei", ZHANG_PW).await;
    problem(r, StatusCode::SERVICE_UNAVAILABLE, "directory_unavailable").await;
    srv.stop().await;
    let plain = with_directory(first, &slapd, "off").await;
    plain.token("zhang.wei", ZHANG_PW).await;
    plain.stop().await;
});

both_backends!(incompatible_mapped_roles_refuse_the_sign_in, |first| {
    let slapd = Slapd::start(true);
    let srv = with_directory(first, &slapd, "on").await;
    // li.na signs in as an auditor, then an admin makes her an admin in changeguard.
    let li = srv.token("li.na", ZHANG_PW).await;
    let id = me(&srv, &li).await["id"].as_i64().unwrap();
    let admin = srv.admin().await;
    srv.grant(&admin, id, &["admin"]).await;
    // She joins the operators: tech_operator is incompatible with admin.
    li_na_joins_the_operators(&slapd);
    let r = srv.login("li.na", ZHANG_PW).await;
    let doc = problem(r, StatusCode::FORBIDDEN, "directory_roles_incompatible").await;
    assert!(
        doc["detail"].as_str().unwrap().contains("tech_operator"),
        "{doc}"
    );
    let refused = audited(first, "auth.login").await;
    assert!(
        refused
            .iter()
            .any(|e| e["code"] == "directory_roles_incompatible"),
        "{refused:?}"
    );
    srv.stop().await;
});

/// li.na becomes a member of the operators (who are given tech_operator).
fn li_na_joins_the_operators(slapd: &Slapd) {
    slapd.modify(
        "modify",
        &format!(
            "dn: cn=operators,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\n\
             member: uid=li.na,ou=people,{SUFFIX}\n"
        ),
    );
}

/// Removes `uid` and adds a new entry of the same name: another person, with `password`.
fn reuse_name(slapd: &Slapd, uid: &str, password: &str) {
    slapd.modify(
        "modify",
        &format!("dn: uid={uid},ou=people,{SUFFIX}\nchangetype: delete\n"),
    );
    slapd.modify(
        "add",
        &format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
             cn: Newcomer\nsn: Newcomer\nuserPassword: {password}\n"
        ),
    );
}

async fn active(srv: &TestServer, id: i64) -> bool {
    let admin = srv.admin().await;
    let r = srv.get(&format!("/api/v1/users/{id}"), &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await["active"].as_bool().unwrap()
}

both_backends!(a_reused_username_never_inherits_the_account, |first| {
    let slapd = Slapd::start(true);
    let srv = with_directory(first, &slapd, "on").await;
    let zhang = srv.token("zhang.wei", ZHANG_PW).await;
    let zhang_id = me(&srv, &zhang).await["id"].as_i64().unwrap();
    let li = srv.token("li.na", ZHANG_PW).await;
    let li_id = me(&srv, &li).await["id"].as_i64().unwrap();

    // li.na is renamed in the directory (same entry): no second account for her.
    slapd.modify(
        "modify",
        &format!(
            "dn: uid=li.na,ou=people,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=na.li\n\
             deleteoldrdn: 1\n"
        ),
    );
    let r = srv.login("na.li", ZHANG_PW).await;
    let doc = problem(r, StatusCode::FORBIDDEN, "directory_account_renamed").await;
    assert!(doc["detail"].as_str().unwrap().contains("li.na"), "{doc}");
    slapd.modify(
        "modify",
        &format!(
            "dn: uid=na.li,ou=people,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=li.na\n\
             deleteoldrdn: 1\n"
        ),
    );

    // zhang.wei leaves; a newcomer gets the same name: they are told, the old account ends.
    reuse_name(&slapd, "zhang.wei", "the newcomer's password");
    let r = srv.login("zhang.wei", "the newcomer's password").await;
    problem(r, StatusCode::FORBIDDEN, "directory_identity_changed").await;
    assert!(!active(&srv, zhang_id).await);
    let r = srv.get("/api/v1/me", &zhang).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = srv.login("zhang.wei", "the newcomer's password").await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    // The sync finds the same for li.na (nobody signed in with the name since).
    reuse_name(&slapd, "li.na", "another newcomer's password");
    let synced = changeguard::directory::sync::run(&srv.app, srv.now())
        .await
        .unwrap();
    assert_eq!(synced.disabled, vec!["li.na".to_string()]);
    assert!(!active(&srv, li_id).await);
    let ended = audited(first, "directory.sync.disable").await;
    assert!(
        ended
            .iter()
            .filter(|e| e["reason"].as_str().unwrap_or("").contains("another"))
            .count()
            == 2,
        "{ended:?}"
    );
    srv.stop().await;
});

both_backends!(
    names_outside_the_username_shape_never_reach_the_directory,
    |first| {
        let mut slapd = Slapd::start(true);
        // A filter that also matches on cn: the entry found must still carry the typed name in uid.
        let toml = directory_toml().replace(
            "user_filter = \"(uid={username})\"",
            "user_filter = \"(|(uid={username})(cn={username}))\"",
        );
        let srv = with_policy(first, &slapd, "on", &toml, false).await;
        // cn of zhang.wei's entry is "Zhang Wei" (not a username); li.na's cn is "Li Na".
        slapd.modify(
            "add",
            &format!(
                "dn: uid=w.other,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: w.other\n\
             cn: wang\nsn: Wang\nuserPassword: {ZHANG_PW}\n"
            ),
        );
        let r = srv.login("wang", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        // Upper case is the same name.
        let token = srv.token("Zhang.Wei", ZHANG_PW).await;
        // Somebody makes the name ambiguous (an entry whose cn is zhang.wei): nobody signs in
        // with it, and the sync changes nothing because of it.
        slapd.modify(
            "add",
            &format!(
                "dn: uid=w.two,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: w.two\n\
                 cn: zhang.wei\nsn: Two\nuserPassword: {ZHANG_PW}\n"
            ),
        );
        let r = srv.login("zhang.wei", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let synced = changeguard::directory::sync::run(&srv.app, srv.now())
            .await
            .unwrap();
        assert!(synced.disabled.is_empty(), "{synced:?}");
        me(&srv, &token).await;

        // With the directory down, a name of the right shape asks it (503, no sooner than a
        // refusal); one of another shape never does (401).
        slapd.stop();
        let started = Instant::now();
        let r = srv.login("new.person", ZHANG_PW).await;
        problem(r, StatusCode::SERVICE_UNAVAILABLE, "directory_unavailable").await;
        assert!(started.elapsed() >= Duration::from_millis(400));
        for name in ["zhang wei", "zhang*", "x(y)", "张伟"] {
            let r = srv.login(name, ZHANG_PW).await;
            problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        }
        srv.stop().await;
    }
);

both_backends!(
    a_disabled_entry_is_refused_and_the_sync_ends_the_account,
    |first| {
        let slapd = Slapd::start(true);
        let toml = directory_toml().replace(
            "disabled_by = \"gone\"",
            "disabled_by = \"attribute\"\ndisabled_attribute = \"carLicense\"",
        );
        let srv = with_policy(first, &slapd, "on", &toml, false).await;
        let token = srv.token("zhang.wei", ZHANG_PW).await;
        let id = me(&srv, &token).await["id"].as_i64().unwrap();
        // An admin cannot give a directory account a local password either.
        let admin = srv.admin().await;
        let r = srv
            .call(
                reqwest::Method::PATCH,
                &format!("/api/v1/users/{id}"),
                Some(&admin),
                Some(json!({"password": "a local password for zhang"})),
            )
            .await;
        problem(
            r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "directory_account_password",
        )
        .await;

        slapd.modify(
            "modify",
            &format!(
                "dn: uid=zhang.wei,ou=people,{SUFFIX}\nchangetype: modify\nadd: carLicense\n\
             carLicense: locked\n"
            ),
        );
        let r = srv.login("zhang.wei", ZHANG_PW).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        // A sign-in attempt (anybody's) never disables an account here; the sync does, and its
        // session ends with it.
        assert!(active(&srv, id).await);
        let synced = changeguard::directory::sync::run(&srv.app, srv.now())
            .await
            .unwrap();
        assert_eq!(synced.disabled, vec!["zhang.wei".to_string()]);
        assert!(!active(&srv, id).await);
        let r = srv.get("/api/v1/me", &token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let ended = audited(first, "directory.sync.disable").await;
        assert!(
            ended
                .iter()
                .any(|e| e["reason"] == "disabled in the directory"),
            "{ended:?}"
        );
        srv.stop().await;
    }
);

both_backends!(
    a_mapped_role_that_needs_a_second_factor_ends_sessions_without_one,
    |first| {
        let slapd = Slapd::start(true);
        let srv = with_policy(first, &slapd, "on", &directory_toml(), true).await;
        // li.na is an auditor (no second factor at login): a full session.
        let r = srv.login("li.na", ZHANG_PW).await;
        assert_eq!(r.status(), StatusCode::OK);
        let doc = body(r).await;
        assert_eq!(doc["enrolment_required"], false, "{doc}");
        let li = doc["access_token"].as_str().unwrap().to_string();
        me(&srv, &li).await;
        // She joins the operators (tech_operator needs a second factor): at her next sign-in her
        // old session ends and the new one only enrols a factor.
        li_na_joins_the_operators(&slapd);
        let r = srv.login("li.na", ZHANG_PW).await;
        assert_eq!(r.status(), StatusCode::OK);
        let doc = body(r).await;
        assert_eq!(doc["enrolment_required"], true, "{doc}");
        let r = srv.get("/api/v1/me", &li).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let new = doc["access_token"].as_str().unwrap();
        let r = srv.get("/api/v1/changes", new).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "enrolment only");
        srv.stop().await;
    }
);

both_backends!(the_scheduler_runs_the_directory_sync, |first| {
    let slapd = Slapd::start(true);
    let srv = with_directory(first, &slapd, "on").await;
    srv.token("li.na", ZHANG_PW).await;
    slapd.modify(
        "modify",
        &format!("dn: uid=li.na,ou=people,{SUFFIX}\nchangetype: delete\n"),
    );
    // The next slot of the schedule (every 15 minutes), which no background tick has reached.
    let next = srv.now() + chrono::TimeDelta::minutes(15);
    let other = with_directory(first, &slapd, "on").await;
    let ran = changeguard::notify::schedule::tick(&srv.app, next)
        .await
        .unwrap();
    assert!(
        ran.0.iter().any(|(job, _)| *job == "directory_sync"),
        "{ran:?}"
    );
    assert!(!audited(first, "directory.sync.disable").await.is_empty());
    // Once per slot, across instances: another instance with the directory finds it taken.
    let again = changeguard::notify::schedule::tick(&other.app, next)
        .await
        .unwrap();
    assert!(
        !again.0.iter().any(|(job, _)| *job == "directory_sync"),
        "{again:?}"
    );
    other.stop().await;
    srv.stop().await;
});
