//! What a user types to name a target: a path (an SQLite file) or a PostgreSQL connection
//! string, and how a connection string is shown without its password.

use std::fmt;
use std::path::{Path, PathBuf};

/// A target database, as named by a user: in [`TargetOptions`](crate::TargetOptions)' users
/// ([`Replayer::new`](crate::Replayer::new), [`StoreOptions::target`](crate::StoreOptions::target))
/// and every CLI command that takes `--target`.
///
/// [`TargetSpec::parse`] (and the `From` conversions of strings) reads `postgres://…`,
/// `postgresql://…` and libpq `key=value` strings (`host=db1 dbname=infra user=app`) as a
/// PostgreSQL server and anything else as the path of an SQLite file. A path is never taken
/// for a server: convert a [`Path`]/[`PathBuf`] to name a file whose name looks like a URL.
/// `Debug` and [`TargetSpec::name`] never show a password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetSpec {
    /// An SQLite database file (typically on a network share).
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(ConnString),
}

/// A PostgreSQL connection string (URL or libpq `key=value` form), kept as typed; shown only
/// with its password removed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnString {
    raw: String,
    redacted: String,
}

impl ConnString {
    /// The connection string as given (with its password, if it has one).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The connection string without its password: for messages, logs and status.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl TargetSpec {
    /// Reads what a user typed: see the type's documentation.
    pub fn parse(s: &str) -> TargetSpec {
        if is_conn_string(s) {
            TargetSpec::Postgres(ConnString {
                raw: s.to_string(),
                redacted: redact(s),
            })
        } else {
            TargetSpec::Sqlite(PathBuf::from(s))
        }
    }

    /// The target as shown to people and recorded in `replay.json`: an SQLite path made
    /// absolute (without touching the file system, so that an unreachable share cannot hang
    /// it; `./share.db` and its absolute spelling name one target), a server's connection
    /// string without its password.
    pub fn name(&self) -> String {
        match self {
            TargetSpec::Sqlite(p) => std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            TargetSpec::Postgres(c) => c.redacted.clone(),
        }
    }

    /// True if `recorded` (a [`TargetSpec::name`] recorded earlier, e.g. in `replay.json`)
    /// names the target this spec names. An SQLite file: the same absolute path. A server:
    /// the same hosts, ports, user and database, however spelled and whatever the options
    /// that do not change which database it is (timeouts, `sslmode`, a password).
    pub fn names_same_target(&self, recorded: &str) -> bool {
        if self.name() == recorded {
            return true;
        }
        match (self, TargetSpec::parse(recorded)) {
            #[cfg(feature = "postgres")]
            (TargetSpec::Postgres(a), TargetSpec::Postgres(b)) => {
                crate::target::postgres::identity(a) == crate::target::postgres::identity(&b)
            }
            _ => false,
        }
    }

    /// The SQLite file's path, if this names one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            TargetSpec::Sqlite(p) => Some(p),
            TargetSpec::Postgres(_) => None,
        }
    }

    /// True if this names a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self, TargetSpec::Postgres(_))
    }

    /// How the target appears in a [`TargetError`](crate::TargetError)'s `path` field: the
    /// file's path, or the server's redacted connection string.
    pub(crate) fn error_path(&self) -> PathBuf {
        match self {
            TargetSpec::Sqlite(p) => p.clone(),
            TargetSpec::Postgres(c) => PathBuf::from(&c.redacted),
        }
    }
}

impl fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            TargetSpec::Postgres(c) => f.debug_tuple("Postgres").field(c).finish(),
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Sqlite(p) => write!(f, "{}", p.display()),
            TargetSpec::Postgres(c) => f.write_str(&c.redacted),
        }
    }
}

impl From<&str> for TargetSpec {
    fn from(s: &str) -> Self {
        TargetSpec::parse(s)
    }
}

impl From<String> for TargetSpec {
    fn from(s: String) -> Self {
        TargetSpec::parse(&s)
    }
}

impl From<&String> for TargetSpec {
    fn from(s: &String) -> Self {
        TargetSpec::parse(s)
    }
}

impl From<PathBuf> for TargetSpec {
    fn from(p: PathBuf) -> Self {
        TargetSpec::Sqlite(p)
    }
}

impl From<&PathBuf> for TargetSpec {
    fn from(p: &PathBuf) -> Self {
        TargetSpec::Sqlite(p.clone())
    }
}

impl From<&Path> for TargetSpec {
    fn from(p: &Path) -> Self {
        TargetSpec::Sqlite(p.to_path_buf())
    }
}

impl From<&TargetSpec> for TargetSpec {
    fn from(t: &TargetSpec) -> Self {
        t.clone()
    }
}

/// libpq's connection keywords (the `key=value` form is recognised by its first key).
const LIBPQ_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "sslmode",
    "application_name",
    "options",
    "service",
];

fn is_conn_string(s: &str) -> bool {
    let t = s.trim_start();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        return true;
    }
    // key=value form: every word is key=value (or a quoted continuation), the first key one
    // of libpq's.
    let Some((key, _)) = t.split_once('=') else {
        return false;
    };
    let key = key.trim();
    !key.contains('/') && LIBPQ_KEYS.contains(&key)
}

/// The connection string without its password (URL userinfo, `password=` parameters and
/// libpq `password=` words).
fn redact(s: &str) -> String {
    let t = s.trim();
    if let Some(rest) = t
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            t.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (authority_end, _) = rest
            .char_indices()
            .find(|&(_, c)| c == '/' || c == '?')
            .unwrap_or((rest.len(), ' '));
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{user}:***@{hosts}")
                } else {
                    format!("{user}@{hosts}")
                }
            }
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let q: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", q.join("&"))
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{authority}{tail}");
    }
    // key=value: values may be single-quoted with backslash escapes.
    let mut out = Vec::new();
    let mut chars = t.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'\'') {
                value.push('\'');
                chars.next();
                while let Some(c) = chars.next() {
                    value.push(c);
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    } else if c == '\'' {
                        break;
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        if key.eq_ignore_ascii_case("password") {
            out.push(format!("{key}=***"));
        } else {
            out.push(format!("{key}={value}"));
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_urls_and_keyword_strings_are_told_apart() {
        assert!(matches!(
            TargetSpec::parse("share/infra.db"),
            TargetSpec::Sqlite(_)
        ));
        assert!(matches!(
            TargetSpec::parse("/mnt/share/x=y.db"),
            TargetSpec::Sqlite(_)
        ));
        assert!(matches!(
            TargetSpec::parse("dbname.db"),
            TargetSpec::Sqlite(_)
        ));
        assert!(TargetSpec::parse("postgres://u@h/db").is_postgres());
        assert!(TargetSpec::parse("postgresql://h:5433/db").is_postgres());
        assert!(TargetSpec::parse("host=/tmp port=5432 dbname=x").is_postgres());
        assert!(TargetSpec::parse("dbname=x").is_postgres());
        assert!(matches!(
            TargetSpec::from(PathBuf::from("postgres://not-a-url")),
            TargetSpec::Sqlite(_)
        ));
    }

    #[test]
    fn passwords_never_show() {
        for (s, want) in [
            (
                "postgres://app:s3cret@db1:5432/infra",
                "postgres://app:***@db1:5432/infra",
            ),
            (
                "postgresql://app@db1/infra?password=s3cret&sslmode=require",
                "postgresql://app@db1/infra?password=***&sslmode=require",
            ),
            (
                "host=db1 password=s3cret dbname=infra",
                "host=db1 password=*** dbname=infra",
            ),
            (
                "host=db1 password = 'a b\\' c' dbname=infra",
                "host=db1 password=*** dbname=infra",
            ),
        ] {
            let t = TargetSpec::parse(s);
            assert_eq!(t.name(), want);
            assert!(!format!("{t:?} {t}").contains("s3cret"), "{t:?}");
            assert!(!format!("{t:?}").contains("a b"));
        }
    }
}

#[cfg(all(test, feature = "postgres"))]
mod identity_tests {
    use super::*;

    #[test]
    fn one_database_however_spelled() {
        let a = TargetSpec::parse("postgres://app@DB1:5433/infra?connect_timeout=5");
        for same in [
            "postgresql://app:s3cret@db1:5433/infra",
            "host=db1 port=5433 user=app dbname=infra sslmode=disable",
            "host=db1 port=5433 user=app password=*** dbname=infra connect_timeout=30",
        ] {
            assert!(a.names_same_target(same), "{same}");
        }
        for other in [
            "postgres://app@db1:5434/infra",
            "postgres://app@db2:5433/infra",
            "postgres://other@db1:5433/infra",
            "postgres://app@db1:5433/infra2",
            "/mnt/share/infra.db",
        ] {
            assert!(!a.names_same_target(other), "{other}");
        }
        let file = TargetSpec::parse("share/infra.db");
        assert!(file.names_same_target(&file.name()));
        assert!(!file.names_same_target("share/other.db"));
    }
}
