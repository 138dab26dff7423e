//! Connecting to a PostgreSQL server as libpq users expect: the connection string (URL or
//! `key=value`), the `PG*` environment variables for what it leaves out, passwords from the
//! string, `PGPASSWORD` or the password file (`PGPASSFILE`, `~/.pgpass`); and the
//! classification of the client's errors by SQLSTATE. A password is never put in a message.
//!
//! TLS follows libpq's `sslmode` (connection string, else `PGSSLMODE`; default `prefer`) and
//! `sslrootcert` (else `PGSSLROOTCERT`, else `~/.postgresql/root.crt` where it exists). The
//! client knows neither `verify-ca`, `verify-full` nor `allow`, nor `sslrootcert`: they are
//! taken out of the connection string here and handled by `tls.rs` (feature `tls`). As libpq
//! does, a connection over a unix socket is never encrypted, whatever the mode.

use std::fmt;
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
        // The TLS handshake failed: the certificate, the server's refusal of TLS, a protocol
        // mismatch are not cured by waiting; a connection lost during the handshake is.
        None if is_tls_failure(&e) => (
            lost_connection(&e),
            format!(
                "{what}: {} (TLS handshake failed{})",
                strip(&e),
                tls_hint(&e)
            ),
        ),
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

/// True for a client error of the TLS handshake (the client's own text names it).
fn is_tls_failure(e: &postgres::Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
}

/// True if `e`'s causes include a network error: the connection was lost, not refused.
fn lost_connection(e: &postgres::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionReset
                    | K::ConnectionAborted
                    | K::UnexpectedEof
                    | K::BrokenPipe
                    | K::TimedOut
            )
        {
            return true;
        }
        src = c.source();
    }
    false
}

/// What to do about a failed TLS handshake, after " — ", or nothing.
fn tls_hint(e: &postgres::Error) -> String {
    if strip(e).contains("server does not support TLS") {
        return " — the server does not accept TLS connections: turn `ssl` on in its \
                configuration, or connect with sslmode=prefer (encrypted if the server offers it)"
            .into();
    }
    #[cfg(feature = "tls")]
    if let Some(h) = super::tls::hint(e) {
        return format!(" — {h}");
    }
    String::new()
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

/// A permanent error in the TLS settings of `conn` (the mode, the root certificates): an
/// operator must change them.
pub(crate) fn tls_settings_error(conn: &ConnString, message: String) -> Error {
    Error::Target(TargetError::Server {
        target: conn.redacted().to_string(),
        message,
        sqlstate: None,
        transient: false,
        source: None,
    })
}

/// libpq's `sslmode`: whether to encrypt the connection and how to check the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Never encrypt.
    Disable,
    /// Taken as [`SslMode::Prefer`] (libpq tries plain first; encrypting first is the safer
    /// reading of "either will do").
    Allow,
    /// Encrypt if the server offers TLS, else plain (the default).
    Prefer,
    /// Encrypt; check the server's certificate only against a root certificate file, if one
    /// is given or `~/.postgresql/root.crt` exists (then as `verify-ca`).
    Require,
    /// Encrypt; the server's certificate must chain to a root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// All modes, in libpq's order.
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The mode's name in a connection string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True for the modes that refuse an unencrypted connection.
    pub(crate) fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// True for the modes that refuse a server certificate without a root to check it by.
    #[cfg(feature = "tls")]
    pub(crate) fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the server's certificate is checked from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A PEM file named by `sslrootcert` or `PGSSLROOTCERT`: it must be readable.
    File(PathBuf),
    /// libpq's default, `~/.postgresql/root.crt`: used where it exists; the verifying modes
    /// need it.
    Default(PathBuf),
    /// No root certificates at all (no home directory to look in).
    None,
    /// `sslrootcert=system`: the system's trusted roots (only with `verify-full`).
    System,
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(p) | RootCert::Default(p) => write!(f, "{}", p.display()),
            RootCert::None => f.write_str("none"),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// What the connection string and the environment say about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// The mode.
    pub(crate) mode: SslMode,
    /// The root certificates.
    pub(crate) root: RootCert,
}

impl TlsSettings {
    /// The settings for messages: `sslmode=…, sslrootcert=…`.
    #[cfg(feature = "tls")]
    pub(crate) fn describe(&self) -> String {
        format!("sslmode={}, sslrootcert={}", self.mode, self.root)
    }
}

/// The TLS settings from the connection string's `sslmode` and `sslrootcert` (`conn_*`), else
/// the environment's `PGSSLMODE` and `PGSSLROOTCERT` (`env_*`), else libpq's defaults
/// (`prefer`, `home`/.postgresql/root.crt). `sslrootcert=system` implies `verify-full` and
/// refuses any other mode, as in libpq.
fn tls_settings(
    conn_mode: Option<&str>,
    env_mode: Option<&str>,
    conn_root: Option<&str>,
    env_root: Option<&str>,
    home: Option<&Path>,
) -> Result<TlsSettings, String> {
    let given = match (conn_mode, env_mode) {
        (Some(m), _) => Some((m, "the connection string's sslmode")),
        (None, Some(m)) => Some((m, "PGSSLMODE")),
        (None, None) => None,
    };
    let mode = match given {
        Some((m, from)) => Some(
            SslMode::ALL
                .into_iter()
                .find(|k| k.as_str() == m)
                .ok_or_else(|| {
                    format!(
                        "{from} {m:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    )
                })?,
        ),
        None => None,
    };
    let root = match conn_root.or(env_root) {
        Some("system") => RootCert::System,
        Some(p) => RootCert::File(PathBuf::from(p)),
        None => home.map_or(RootCert::None, |h| {
            RootCert::Default(h.join(".postgresql").join("root.crt"))
        }),
    };
    let mode = match (mode, &root) {
        (None, RootCert::System) => SslMode::VerifyFull,
        (Some(m), RootCert::System) if m != SslMode::VerifyFull => {
            return Err(format!(
                "weak sslmode {m:?} may not be used with sslrootcert=system (use \"verify-full\")",
                m = m.as_str()
            ));
        }
        (m, _) => m.unwrap_or(SslMode::Prefer),
    };
    Ok(TlsSettings { mode, root })
}

/// The `sslmode` and `sslrootcert` parameters taken out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    mode: Option<String>,
    root: Option<String>,
}

impl TlsParams {
    /// Keeps `value` if `key` is one of ours; true if it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root = Some(value),
            _ => return false,
        }
        true
    }
}

/// `s` without its `sslmode` and `sslrootcert` parameters, and their values. A string this
/// cannot read is returned whole, for the client's parser to say what is wrong with it.
fn take_tls_params(s: &str) -> (String, TlsParams) {
    let taken = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        take_url_params(s)
    } else {
        take_keyword_params(s)
    };
    taken.unwrap_or_else(|| (s.to_string(), TlsParams::default()))
}

/// [`take_tls_params`] of a URL, whose parameters follow the first `?` after the user
/// information, `key=value` separated by `&`, percent-encoded (as the client reads them).
fn take_url_params(s: &str) -> Option<(String, TlsParams)> {
    let after_user = s.find('@').map_or(0, |i| i + 1);
    let q = after_user + s[after_user..].find('?')?;
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut rest = &s[q + 1..];
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let end = rest[eq..].find('&').map_or(rest.len(), |i| eq + i);
        let key = percent_decode(&rest[..eq])?;
        if !params.take(&key, percent_decode(&rest[eq + 1..end])?) {
            kept.push(&rest[..end]);
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let mut out = s[..q].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Some((out, params))
}

/// `%XX` decoded (other `%`s kept), as the client decodes URL parts; `None` if not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// [`take_tls_params`] of a `key=value` string (values bare or single-quoted, `\` escaping
/// the next character, as the client reads them). The parameters left are written back
/// quoted.
fn take_keyword_params(s: &str) -> Option<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = it.next_if(|&c| !c.is_whitespace() && c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        it.next_if_eq(&'=')?;
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next()? {
                    '\'' => break,
                    '\\' => value.push(it.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(it.next()?);
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        if !params.take(&key, value.clone()) {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    if params == TlsParams::default() {
        // Nothing taken: the string as given.
        return Some((s.to_string(), params));
    }
    Some((kept.join(" "), params))
}

/// The client configuration for `conn`, completed as libpq would complete it, and its TLS
/// settings.
pub(crate) fn config(
    conn: &ConnString,
    opts: &TargetOptions,
) -> Result<(Config, TlsSettings), Error> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (rest, params) = take_tls_params(conn.as_str().trim());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let tls = tls_settings(
        params.mode.as_deref(),
        env("PGSSLMODE").as_deref(),
        params.root.as_deref().filter(|r| !r.is_empty()),
        env("PGSSLROOTCERT").as_deref(),
        home.as_deref(),
    )
    .map_err(|reason| tls_settings_error(conn, reason))?;
    let mut cfg: Config = rest.parse().map_err(|e| {
        config_error(
            conn,
            format!("is not a valid PostgreSQL connection string ({e}); use postgres://user@host:port/dbname or host=… dbname=… user=…"),
        )
    })?;
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
    Ok((cfg, tls))
}

/// Which database `conn` names, whatever its spelling and the options that do not change it
/// (timeouts, TLS mode, application name, password): hosts (in order), ports, user and
/// database, completed from the `PG*` environment as a connection would be. Two connection
/// strings with one identity reach one database; a journal acknowledged against one is
/// acknowledged against the other. A string that does not parse is its own (redacted)
/// identity.
pub(crate) fn identity(conn: &ConnString) -> String {
    let Ok((cfg, _)) = config(conn, &TargetOptions::default()) else {
        return conn.redacted().to_string();
    };
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.to_ascii_lowercase(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = match cfg.get_ports() {
        [] => vec!["5432".into()],
        ps => ps.iter().map(u16::to_string).collect(),
    };
    format!(
        "postgresql host={} port={} user={} dbname={}",
        hosts.join(","),
        ports.join(","),
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().or(cfg.get_user()).unwrap_or(""),
    )
}

/// Connects, encrypted as the TLS settings ask (see [`SslMode`]); over a unix socket plain,
/// as libpq does.
///
/// # Errors
/// An invalid connection string: [`TargetError::Unusable`]. A mode that needs TLS in a build
/// without the `tls` feature, an unusable root certificate file, a refused certificate, a
/// server without TLS under a mode that requires it: a permanent [`TargetError::Server`]; an
/// unreachable server: a transient one.
pub(crate) fn connect(conn: &ConnString, opts: &TargetOptions) -> Result<Client, Error> {
    match connect_to(conn, opts, None) {
        Err(e) if opts.create_if_missing && sqlstate_of(&e) == Some("3D000") => {
            create_database(conn, opts)?;
            connect_to(conn, opts, None)
        }
        r => r,
    }
}

/// The SQLSTATE of a server error, if `e` is one.
fn sqlstate_of(e: &Error) -> Option<&str> {
    match e {
        Error::Target(TargetError::Server { sqlstate, .. }) => sqlstate.as_deref(),
        _ => None,
    }
}

/// With [`TargetOptions::create_if_missing`], a database the connection string names that
/// does not exist is created as `createdb` does: through the `postgres` maintenance database,
/// owned by the connecting role (which needs `CREATEDB`). A database another replayer created
/// meanwhile is fine.
fn create_database(conn: &ConnString, opts: &TargetOptions) -> Result<(), Error> {
    let (cfg, _) = config(conn, opts)?;
    let name = cfg
        .get_dbname()
        .map(str::to_owned)
        .or_else(|| cfg.get_user().map(str::to_owned))
        .unwrap_or_default();
    let mut admin = connect_to(conn, opts, Some("postgres"))?;
    let sql = format!("CREATE DATABASE {}", super::catalog::quote_ident(&name));
    match admin.batch_execute(&sql) {
        Ok(()) => {
            tracing::info!(target = %conn.redacted(), database = %name, "created the target database");
            Ok(())
        }
        Err(e) if e.code().is_some_and(|c| c.code() == "42P04") => Ok(()),
        Err(e) => Err(pg_error(
            conn.redacted(),
            &format!("create database {name:?} (TargetOptions::create_if_missing)"),
            e,
        )),
    }
}

/// Connects as the connection string says, to database `dbname` instead of its own if given.
fn connect_to(
    conn: &ConnString,
    opts: &TargetOptions,
    dbname: Option<&str>,
) -> Result<Client, Error> {
    let (mut cfg, tls) = config(conn, opts)?;
    if let Some(d) = dbname {
        cfg.dbname(d);
    }
    #[cfg(not(feature = "tls"))]
    if let Some(reason) = refusal_without_tls(tls.mode) {
        return Err(tls_settings_error(conn, reason));
    }
    #[cfg(feature = "tls")]
    {
        // The client connects by `hostaddr` where one is given, else by each host. (A list
        // that mixes sockets and TCP hosts gets one mode for all: a socket then answers the
        // TLS request with a refusal, plain under prefer, an error under require.)
        let over_tcp = !cfg.get_hostaddrs().is_empty()
            || cfg.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
        if tls.mode != SslMode::Disable && over_tcp {
            return super::tls::connect(conn, &mut cfg, &tls);
        }
    }
    cfg.ssl_mode(postgres::config::SslMode::Disable);
    cfg.connect(NoTls)
        .map_err(|e| pg_error(conn.redacted(), "connect", e))
}

/// In a build without the `tls` feature: why `mode` cannot be had, if it needs TLS (libpq
/// refuses those modes too when built without TLS).
#[cfg_attr(feature = "tls", allow(dead_code))]
fn refusal_without_tls(mode: SslMode) -> Option<String> {
    mode.requires_tls().then(|| {
        format!(
            "sslmode={mode} needs TLS, and this build has no TLS: build with feature `tls`, or use sslmode=prefer or disable"
        )
    })
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

    fn taken(s: &str) -> (String, Option<String>, Option<String>) {
        let (rest, p) = take_tls_params(s);
        (rest, p.mode, p.root)
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_url_and_the_rest_kept() {
        assert_eq!(
            taken(
                "postgres://u:p%3Fw@h:5433/db?sslmode=verify-full&application_name=a%26b&sslrootcert=%2Fetc%2Fca.pem"
            ),
            (
                "postgres://u:p%3Fw@h:5433/db?application_name=a%26b".into(),
                Some("verify-full".into()),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            taken("postgresql://h/db?sslmode=require"),
            ("postgresql://h/db".into(), Some("require".into()), None)
        );
        // A `?` in the user information is not the query's.
        assert_eq!(
            taken("postgres://u:a?b@h/db"),
            ("postgres://u:a?b@h/db".into(), None, None)
        );
        assert_eq!(
            taken("postgres://h/db?options=-csearch_path%3Dinv"),
            (
                "postgres://h/db?options=-csearch_path%3Dinv".into(),
                None,
                None
            )
        );
        // What cannot be read is left whole, for the client to refuse.
        assert_eq!(
            taken("postgres://h/db?sslmode"),
            ("postgres://h/db?sslmode".into(), None, None)
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_key_value_strings_and_the_rest_still_parses() {
        let (rest, mode, root) = taken(
            r"host=db.example port=5433 sslmode = 'verify-ca' password='a b\'c\\' sslrootcert=/x/ca\ 1.pem",
        );
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("verify-ca"), Some("/x/ca 1.pem"))
        );
        let cfg: Config = rest.parse().expect("the rest parses");
        assert_eq!(cfg.get_hosts(), [Host::Tcp("db.example".into())]);
        assert_eq!(cfg.get_ports(), [5433]);
        assert_eq!(cfg.get_password(), Some(&b"a b'c\\"[..]));
        // Nothing of ours: the string as given.
        let s = "host=/tmp port=5432 user=me";
        assert_eq!(taken(s), (s.to_string(), None, None));
        // Unterminated quotes are the client's to refuse.
        let s = "host=h sslmode='require";
        assert_eq!(taken(s), (s.to_string(), None, None));
    }

    #[test]
    fn the_connection_string_wins_over_the_environment_and_prefer_is_the_default() {
        let home = Path::new("/home/me");
        let t = tls_settings(
            Some("verify-full"),
            Some("disable"),
            Some("/ca.pem"),
            Some("/env.pem"),
            Some(home),
        )
        .unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root, RootCert::File("/ca.pem".into()));
        let t = tls_settings(None, Some("require"), None, Some("/env.pem"), Some(home)).unwrap();
        assert_eq!(
            (t.mode, t.root),
            (SslMode::Require, RootCert::File("/env.pem".into()))
        );
        let t = tls_settings(None, None, None, None, Some(home)).unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(
            t.root,
            RootCert::Default("/home/me/.postgresql/root.crt".into())
        );
        assert_eq!(
            tls_settings(None, None, None, None, None).unwrap().root,
            RootCert::None
        );
        for m in SslMode::ALL {
            assert_eq!(
                tls_settings(Some(m.as_str()), None, None, None, None)
                    .unwrap()
                    .mode,
                m
            );
        }
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_where_it_came_from() {
        let e = tls_settings(Some("verify_full"), None, None, None, None).unwrap_err();
        assert!(
            e.contains("connection string")
                && e.contains("verify_full")
                && e.contains("verify-full"),
            "{e}"
        );
        let e = tls_settings(None, Some("on"), None, None, None).unwrap_err();
        assert!(e.contains("PGSSLMODE") && e.contains("\"on\""), "{e}");
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
        let t = tls_settings(None, None, Some("system"), None, None).unwrap();
        assert_eq!((t.mode, t.root), (SslMode::VerifyFull, RootCert::System));
        let e = tls_settings(Some("require"), None, None, Some("system"), None).unwrap_err();
        assert!(
            e.contains("weak sslmode \"require\"") && e.contains("verify-full"),
            "{e}"
        );
    }

    #[test]
    fn a_connection_string_with_tls_parameters_configures_the_client() {
        let conn = match crate::target::TargetSpec::parse(
            "postgres://app:pw@db.example:5433/inv?sslmode=verify-full&sslrootcert=/ca.pem",
        ) {
            crate::target::TargetSpec::Postgres(c) => c,
            crate::target::TargetSpec::Sqlite(p) => panic!("not a server: {}", p.display()),
        };
        let (cfg, tls) = config(&conn, &TargetOptions::new()).expect("config");
        assert_eq!(cfg.get_hosts(), [Host::Tcp("db.example".into())]);
        assert_eq!(cfg.get_dbname(), Some("inv"));
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root, RootCert::File("/ca.pem".into()));
    }

    #[test]
    fn without_the_tls_feature_the_modes_that_need_tls_are_refused_naming_the_feature() {
        for m in SslMode::ALL {
            let refusal = refusal_without_tls(m);
            assert_eq!(refusal.is_some(), m.requires_tls(), "{m}");
            if let Some(r) = refusal {
                assert!(
                    r.contains("feature `tls`") && r.contains(&format!("sslmode={m}")),
                    "{r}"
                );
            }
        }
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
