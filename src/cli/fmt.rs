//! Human-readable numbers and times for the command line.

use std::time::Duration;

/// Text for a terminal: control characters (newlines, escape sequences, …) in names and values
/// that come from a journal or a database are shown escaped (`\n`, `\u{1b}`), so that they can
/// neither forge lines nor drive the terminal.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `writeln!` for a line of human-readable output, its control characters escaped by
/// [`escape`]: for every line built from names and values of a journal or a database (a name
/// with a newline would forge a line, an escape sequence would drive the terminal).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, "{}", $crate::cli::fmt::escape(&format!($($arg)*)))
    };
}
pub(crate) use say;

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration rounded for people: `850ms`, `12.3s`, `4m05s`, `2h13m`, `3d04h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Milliseconds since the Unix epoch as UTC ISO 8601 (`2026-11-24T21:03:04.123Z`) followed by
/// its age (`, 5.2s ago`).
pub fn timestamp(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let age = if now >= ms {
        format!(", {} ago", duration(Duration::from_millis(now - ms)))
    } else {
        String::new()
    };
    format!("{}{age}", utc(ms))
}

/// Milliseconds since the Unix epoch as UTC ISO 8601 (`2026-11-24T21:03:04.123Z`).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert!(timestamp(1_700_000_000_123).starts_with("2023-11-14T22:13:20.123Z"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}]0;title\u{7}"), "\\u{1b}]0;title\\u{7}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(10), "10 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
    }
}
