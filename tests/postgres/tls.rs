//! TLS to the server (feature `tls`): a certificate authority and a server certificate the
//! test makes with the `openssl` tool, a cluster with `ssl=on` on 127.0.0.1, and libpq's
//! `sslmode`s against it: what verifies, what is refused and why, what is encrypted (as the
//! server's `pg_stat_ssl` shows), `PGSSLMODE` and `PGSSLROOTCERT` through the CLI; and a
//! server with `ssl=off` under `require` and `prefer`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use syncjournal::{Error, ReplayOptions, Replayer, SyncReport, TargetOptions};

use super::{COUNTERS, append_bumps, expected, journal, state};
use crate::support::cli::sj_env;
use crate::support::events::Bump;
use crate::support::postgres::Cluster;
use crate::support::process::skip_or_fail;

/// The name the server's certificate holds (and the only one): connections give it as `host`
/// and reach the server by `hostaddr=127.0.0.1`.
const SERVER_NAME: &str = "db.test";

/// Certificates made for one test, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for [`SERVER_NAME`] it signs, and a second CA that signs
    /// nothing; `None` (skipped, or failed under CI) without the `openssl` tool.
    fn make() -> Option<Pki> {
        if Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            skip_or_fail(
                "TLS",
                "the openssl tool is not installed (apt-get install openssl)",
            );
            return None;
        }
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for (name, cn) in [("ca", "syncjournal-test-CA"), ("other-ca", "another-CA")] {
            pki.openssl(&format!(
                "req -x509 {ec} -days 30 -subj /CN={cn} -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign -keyout {name}.key -out {name}.crt"
            ));
        }
        pki.openssl(&format!(
            "req {ec} -subj /CN={SERVER_NAME} -keyout server.key -out server.csr"
        ));
        std::fs::write(
            pki.path("server.ext"),
            format!(
                "subjectAltName=DNS:{SERVER_NAME}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("extensions file");
        pki.openssl(
            "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 30 \
             -extfile server.ext -out server.crt",
        );
        Some(pki)
    }

    /// `openssl` with `args` (split at white space) in the directory.
    fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path` as a connection string value.
    fn file(&self, name: &str) -> String {
        self.path(name).to_str().expect("a UTF-8 path").to_string()
    }
}

/// A cluster serving TLS with the server certificate of `pki` (and plain connections too).
fn tls_cluster(pki: &Pki) -> Option<Cluster> {
    let c = Cluster::start()?;
    for f in ["server.crt", "server.key"] {
        c.put_file(f, &std::fs::read(pki.path(f)).expect("certificate file"));
    }
    c.restart_with("-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
    Some(c)
}

/// A connection string to database `db` over TCP on 127.0.0.1 naming the server `host`
/// (`db.test`, or an address), with `extra` parameters; the application name, `db` too, marks
/// its connections in `pg_stat_activity`.
fn tcp(c: &Cluster, host: &str, db: &str, extra: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=postgres password=hunter2-pw dbname={db} application_name={db} {extra}",
        c.port
    )
}

/// Replays 6 bumps from a new journal under `dir` to `target`; the replayer is returned
/// with its report, its connection still open.
fn replay(target: &str, dir: &Path) -> (Replayer<Bump>, SyncReport) {
    let j = journal(dir);
    append_bumps(&j, 0, 6);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        target,
        TargetOptions::new(),
        ReplayOptions::new().retry_attempts_max(0),
    );
    let rep = r.sync_now();
    (r, rep)
}

/// Whether the server encrypts the connections of application `app`, one value each.
fn encrypted(c: &Cluster, app: &str) -> Vec<bool> {
    c.client()
        .expect("connect")
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Replays to a new database `db` through `target` (whose application name is `db`) and
/// checks every bump landed once and whether the replayer's connection is encrypted.
fn replays(c: &Cluster, db: &str, target: &str, tmp: &Path, is_encrypted: bool) {
    c.database(db, COUNTERS);
    let (r, rep) = replay(target, &tmp.join(db));
    assert!(rep.error.is_none(), "{target}: {:?}", rep.error);
    assert_eq!(state(c, db), (expected(0, 6), 6, 6), "{target}");
    assert_eq!(encrypted(c, db), [is_encrypted], "{target}");
    drop(r);
}

/// The error of a replay to `target`, which must fail for good without showing the
/// password; its text.
fn refused(target: &str, tmp: &Path, sub: &str) -> String {
    let (_, rep) = replay(target, &tmp.join(sub));
    let e: Error = rep.error.unwrap_or_else(|| panic!("{target}: not refused"));
    let msg = format!("{e} {e:?}");
    assert!(!e.is_transient(), "{target}: transient: {msg}");
    assert!(!msg.contains("hunter2-pw"), "the password shows: {msg}");
    e.to_string()
}

#[test]
fn verify_full_checks_the_chain_and_the_name_verify_ca_the_chain_and_require_encrypts_unchecked() {
    let Some(pki) = Pki::make() else { return };
    let Some(c) = tls_cluster(&pki) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = format!("sslrootcert={}", pki.file("ca.crt"));
    let other = format!("sslrootcert={}", pki.file("other-ca.crt"));

    // The right root and the name in the certificate: encrypted, every entry once.
    let full = tcp(
        &c,
        SERVER_NAME,
        "vfull",
        &format!("sslmode=verify-full {ca}"),
    );
    replays(&c, "vfull", &full, t, true);

    // The same as a URL (the parameters percent-encoded).
    let url = format!(
        "postgresql://postgres:hunter2-pw@{SERVER_NAME}:{}/url?hostaddr=127.0.0.1&application_name=url&sslmode=verify-full&sslrootcert={}",
        c.port,
        pki.file("ca.crt").replace('/', "%2F")
    );
    replays(&c, "url", &url, t, true);

    // An address the certificate does not name: refused by verify-full, naming the name.
    let msg = refused(
        &tcp(
            &c,
            "127.0.0.1",
            "postgres",
            &format!("sslmode=verify-full {ca}"),
        ),
        t,
        "wrong-name",
    );
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("does not name the host"),
        "{msg}"
    );
    assert!(
        msg.contains("127.0.0.1") && msg.contains("sslmode=verify-full"),
        "{msg}"
    );
    // … and taken by verify-ca, which checks the chain only.
    let ca_only = tcp(&c, "127.0.0.1", "vca", &format!("sslmode=verify-ca {ca}"));
    replays(&c, "vca", &ca_only, t, true);

    // A root that did not sign the server's certificate: refused by verify-ca and verify-full.
    for mode in ["verify-ca", "verify-full"] {
        let msg = refused(
            &tcp(
                &c,
                SERVER_NAME,
                "postgres",
                &format!("sslmode={mode} {other}"),
            ),
            t,
            mode,
        );
        assert!(
            msg.contains("not issued by a root certificate") && msg.contains("other-ca.crt"),
            "{msg}"
        );
    }
    // require with that root checks the chain too (libpq: a root file makes it verify-ca).
    let msg = refused(
        &tcp(
            &c,
            SERVER_NAME,
            "postgres",
            &format!("sslmode=require {other}"),
        ),
        t,
        "require-other",
    );
    assert!(msg.contains("not issued by a root certificate"), "{msg}");

    // require without a root: encrypted, the certificate not checked.
    let req = tcp(&c, "127.0.0.1", "req", "sslmode=require");
    replays(&c, "req", &req, t, true);
    // prefer (the default) encrypts where the server offers TLS …
    replays(&c, "pref", &tcp(&c, "127.0.0.1", "pref", ""), t, true);
    // … and falls back to plain when the handshake fails, as libpq does.
    let pref_other = tcp(&c, SERVER_NAME, "pref2", &format!("sslmode=prefer {other}"));
    replays(&c, "pref2", &pref_other, t, false);
    // Over the unix socket nothing is encrypted, even under require (as with libpq).
    let sock = format!(
        "{} application_name=sock sslmode=require",
        c.url_for("sock", "postgres")
    );
    replays(&c, "sock", &sock, t, false);

    // Root certificate files that cannot be used are named, with what is wrong with them.
    let missing = pki.file("nope.crt");
    let msg = refused(
        &tcp(
            &c,
            SERVER_NAME,
            "postgres",
            &format!("sslmode=verify-full sslrootcert={missing}"),
        ),
        t,
        "missing",
    );
    assert!(
        msg.contains("cannot read the root certificate file") && msg.contains(&missing),
        "{msg}"
    );
    std::fs::write(pki.path("garbage.crt"), "this is not a certificate\n").unwrap();
    let garbage = pki.file("garbage.crt");
    let msg = refused(
        &tcp(
            &c,
            SERVER_NAME,
            "postgres",
            &format!("sslmode=verify-ca sslrootcert={garbage}"),
        ),
        t,
        "garbage",
    );
    assert!(
        msg.contains("holds no certificate") && msg.contains(&garbage),
        "{msg}"
    );
    // A mode libpq does not know.
    let msg = refused(
        &tcp(&c, SERVER_NAME, "postgres", "sslmode=verify"),
        t,
        "unknown",
    );
    assert!(msg.contains("\"verify\" is not one of"), "{msg}");
}

#[test]
fn pgsslmode_and_pgsslrootcert_apply_where_the_connection_string_gives_none() {
    let Some(pki) = Pki::make() else { return };
    let Some(c) = tls_cluster(&pki) else { return };
    c.database("env", COUNTERS);
    let home = tempfile::tempdir().unwrap();
    let plain = tcp(&c, SERVER_NAME, "env", "");
    let check = |target: &str, envs: &[(&str, &str)]| {
        let mut all: Vec<(&str, &std::ffi::OsStr)> = vec![("HOME", home.path().as_os_str())];
        all.extend(envs.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(v))));
        sj_env(&["check-target", target], &all)
    };
    let ca = pki.file("ca.crt");
    let other = pki.file("other-ca.crt");
    // The environment's mode and root: verified, healthy.
    let r = check(
        &plain,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // The wrong root from the environment: refused, naming the certificate.
    let r = check(
        &plain,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("not issued by a root certificate"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("hunter2-pw"), "{}", r.stderr);
    // The connection string wins over the environment.
    let r = check(
        &tcp(&c, SERVER_NAME, "env", &format!("sslrootcert={ca}")),
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = check(
        &tcp(&c, SERVER_NAME, "env", "sslmode=disable"),
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // verify-full with no root at all (none named, no ~/.postgresql/root.crt): says what to do.
    let r = check(&plain, &[("PGSSLMODE", "verify-full")]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("no root certificate") && r.stderr.contains("root.crt"),
        "{}",
        r.stderr
    );
    // libpq's default root file, ~/.postgresql/root.crt, is used where it exists.
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    std::fs::copy(pki.path("ca.crt"), home.path().join(".postgresql/root.crt")).unwrap();
    let r = check(&plain, &[("PGSSLMODE", "verify-full")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // A mode the environment gets wrong is named as the environment's.
    let r = check(&plain, &[("PGSSLMODE", "on")]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("PGSSLMODE \"on\""), "{}", r.stderr);
}

#[test]
fn against_a_server_without_tls_require_is_refused_for_good_and_prefer_connects_plain() {
    let Some(pki) = Pki::make() else { return };
    let Some(c) = Cluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = format!("sslrootcert={}", pki.file("ca.crt"));
    for mode in ["require", "verify-full"] {
        let msg = refused(
            &tcp(&c, "127.0.0.1", "postgres", &format!("sslmode={mode} {ca}")),
            t,
            mode,
        );
        assert!(
            msg.contains("does not accept TLS") && msg.contains(&format!("sslmode={mode}")),
            "{msg}"
        );
    }
    let pref = tcp(&c, "127.0.0.1", "plain", "sslmode=prefer");
    replays(&c, "plain", &pref, t, false);
    let allow = tcp(&c, "127.0.0.1", "allow", "sslmode=allow");
    replays(&c, "allow", &allow, t, false);
}
