//! Connecting to a PostgreSQL server as libpq users expect: the connection string (URL or
//! `key=value`), the `PG*` environment variables for what it leaves out, passwords from the
//! string, `PGPASSWORD` or the password file (`PGPASSFILE`, `~/.pgpass`); and the
//! classification of the client's errors by SQLSTATE. A password is never put in a message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, Config, NoTls};

use crate::error::{Error, PostgresError, TargetError};
use crate::target::{ConnString, TargetOptions};

/// SQLSTATEs after which a retry can succeed: the entry is not at fault.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" // admin shutdown, crash shutdown, cannot connect now
                | "40001" | "40P01" // serialization failure, deadlock
                | "53300" | "53000" | "53100" | "53200" // too many connections, resources
                | "25006" // read-only transaction (a standby during a failover)
                | "57014" // query cancelled (statement timeout)
                | "55P03" // lock not available
        )
}

/// True for SQLSTATEs that refuse an entry for good: constraint violations (class 23), data
/// exceptions (22), syntax or access rule violations (42: undefined table or column, …) —
/// except missing privileges (42501), which are the role's, not the entry's.
pub(crate) fn refuses_entry(code: &str) -> bool {
    (code.starts_with("23") || code.starts_with("22") || code.starts_with("42")) && code != "42501"
}

/// Maps a client error to [`TargetError::Server`], with its SQLSTATE in the message.
pub(crate) fn pg_error(name: &str, what: &str, e: postgres::Error) -> Error {
    let sqlstate = e.code().map(|c| c.code().to_string());
    let (transient, message) = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            let hint = match code {
                "42501" => {
                    " — the role lacks a privilege syncjournal needs: see the README's PostgreSQL section"
                }
                "3D000" => " — the database does not exist",
                "28P01" | "28000" => {
                    " — authentication failed: check the user and the password (PGPASSWORD or ~/.pgpass)"
                }
                _ => "",
            };
            (
                is_transient_sqlstate(code),
                format!("{what}: {}{detail} (SQLSTATE {code}){hint}", db.message()),
            )
        }
        // No answer from the server: the connection failed or was lost.
        None => (
            true,
            format!("{what}: {} (connection failure; will retry)", strip(&e)),
        ),
    };
    Error::Target(TargetError::Server {
        target: name.to_string(),
        message,
        sqlstate,
        transient,
        source: Some(PostgresError::from(e)),
    })
}

/// A client error's text (its causes included), which never holds the password.
fn strip(e: &postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// A permanent configuration error about the server named `conn`.
pub(crate) fn config_error(conn: &ConnString, reason: String) -> Error {
    Error::Target(TargetError::Unusable {
        path: PathBuf::from(conn.redacted()),
        reason,
    })
}

/// The client configuration for `conn`, completed as libpq would complete it.
pub(crate) fn config(conn: &ConnString, opts: &TargetOptions) -> Result<Config, Error> {
    let mut cfg: Config = conn.as_str().trim().parse().map_err(|e| {
        config_error(
            conn,
            format!("is not a valid PostgreSQL connection string ({e}); use postgres://user@host:port/dbname or host=… dbname=… user=…"),
        )
    })?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if cfg.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) if h.starts_with('/') => {
                cfg.host_path(h);
            }
            Some(h) => {
                cfg.host(&h);
            }
            None => {
                cfg.host_path("/var/run/postgresql");
            }
        }
    }
    if cfg.get_ports().is_empty()
        && let Some(p) = env("PGPORT").and_then(|p| p.parse::<u16>().ok())
    {
        cfg.port(p);
    }
    if cfg.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        cfg.user(&user);
    }
    if cfg.get_dbname().is_none()
        && let Some(d) = env("PGDATABASE")
    {
        cfg.dbname(&d);
    }
    if cfg.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            cfg.password(p);
        } else if let Some(p) = password_from_file(&cfg) {
            cfg.password(p);
        }
    }
    if cfg.get_connect_timeout().is_none() && opts.connect_timeout_ms > 0 {
        cfg.connect_timeout(Duration::from_millis(opts.connect_timeout_ms));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("syncjournal");
    }
    Ok(cfg)
}

/// Connects (without TLS: `sslmode=require` is refused by the client with a clear error).
pub(crate) fn connect(conn: &ConnString, opts: &TargetOptions) -> Result<Client, Error> {
    let cfg = config(conn, opts)?;
    cfg.connect(NoTls)
        .map_err(|e| pg_error(conn.redacted(), "connect", e))
}

/// The password for `cfg` from the password file (`PGPASSFILE`, else `~/.pgpass`), as libpq
/// reads it: `host:port:database:user:password` lines, `*` matching anything, `\` escaping
/// `:` and `\`; a file readable by group or others is ignored (with a warning), as libpq does.
fn password_from_file(cfg: &Config) -> Option<Vec<u8>> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() {
            return None;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "password file has group or world access; ignored (chmod 0600 it)");
            return None;
        }
    }
    if meta.len() > 1 << 20 {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a socket connection against `localhost`.
        Some(Host::Unix(_)) | None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap_or("").to_string();
    let db = cfg.get_dbname().unwrap_or(&user).to_string();
    pgpass_lookup(&text, [&host, &port, &db, &user]).map(String::into_bytes)
}

/// The password of the first line of a password file matching `want` (host, port, database,
/// user).
pub(crate) fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields.pop().unwrap_or_default());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines_match_as_libpq_matches_them() {
        let f = "# comment\nother:5432:*:app:wrong\nlocalhost:5433:infra:app:s3cr\\:et\n*:*:*:app:fallback\n";
        assert_eq!(
            pgpass_lookup(f, ["localhost", "5433", "infra", "app"]).as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(
            pgpass_lookup(f, ["db9", "5432", "x", "app"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(f, ["db9", "5432", "x", "bob"]), None);
    }

    #[test]
    fn sqlstates_split_into_transient_and_permanent() {
        for c in [
            "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "25006",
        ] {
            assert!(is_transient_sqlstate(c), "{c}");
            assert!(!refuses_entry(c), "{c}");
        }
        for c in ["23505", "23502", "42P01", "42703", "22003", "22P02"] {
            assert!(!is_transient_sqlstate(c), "{c}");
            assert!(refuses_entry(c), "{c}");
        }
        assert!(!is_transient_sqlstate("42501") && !refuses_entry("42501"));
    }
}
