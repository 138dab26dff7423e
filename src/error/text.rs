//! Message texts shared by several errors.

use std::path::Path;

use crate::error::Error;
use crate::format::Lsn;

/// A range of LSNs `[start, end)` in words: `LSN 10` for one, `LSNs 10 to 12` for several.
pub fn lsn_span(range: &std::ops::Range<Lsn>) -> String {
    if range.end <= range.start.saturating_add(1) {
        format!("LSN {}", range.start)
    } else {
        format!("LSNs {} to {}", range.start, range.end - 1)
    }
}

pub(crate) fn in_doubt_text(lsn: Lsn, durable: bool, cause: &Error) -> String {
    if durable {
        format!(
            "the event was journaled durably as LSN {lsn}, but the cache was not updated ({cause}); it is not lost: reopen the store, which applies it to the cache, and it reaches the target — do not apply it again"
        )
    } else {
        format!(
            "the event was journaled as LSN {lsn}, but whether it is durable is unknown ({cause}); reopen the store: if journal_state().durable_lsn is then at least {lsn}, the journal kept it (it is in the cache and reaches the target), otherwise it was lost — do not apply it again before checking"
        )
    }
}

pub(crate) fn locked_text(dir: &Path, pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => format!(
            "journal {} is already open in this process (pid {pid}); open it once and share the handle (`Arc<Journal>`, or one `Store`)",
            dir.display()
        ),
        Some(pid) => format!(
            "journal {} is locked by pid {pid}; only one process may open a journal at a time (wait for it to close, or pass lock_wait_ms to wait)",
            dir.display()
        ),
        None => format!(
            "journal {} is locked by another process; only one process may open a journal at a time",
            dir.display()
        ),
    }
}
