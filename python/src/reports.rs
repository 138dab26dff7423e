//! The crate's reports as Python dicts (the package turns them into frozen dataclasses):
//! `SyncReport`, `SyncStatus` (through its serde form, so that every field comes across),
//! `JournalState`, quarantined entries.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use syncjournal::replay::{PendingBasis, QuarantinedEntry};
use syncjournal::{JournalState, SyncReport, SyncStatus};

use crate::errors::to_exception;

fn basis(b: PendingBasis) -> &'static str {
    match b {
        PendingBasis::Target => "target",
        PendingBasis::Acknowledgement => "acknowledgement",
    }
}

/// A `SyncReport` as a dict; its error as a `syncjournal.Error` instance (not raised).
pub(crate) fn report_dict<'py>(py: Python<'py>, r: &SyncReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("applied", r.applied)?;
    d.set_item("quarantined", r.quarantined)?;
    d.set_item("transactions", r.transactions)?;
    d.set_item("retries", r.retries)?;
    d.set_item("duration_s", r.duration.as_secs_f64())?;
    d.set_item("pending", r.pending)?;
    d.set_item("pending_basis", basis(r.pending_basis))?;
    d.set_item("target_lsn", r.target_lsn)?;
    match &r.error {
        Some(e) => d.set_item("error", to_exception(py, e)?)?,
        None => d.set_item("error", py.None())?,
    }
    d.set_item("text", r.to_string())?;
    Ok(d)
}

/// A `SyncStatus` in its serde (JSON) form: every field, times in ms since the Unix epoch.
pub(crate) fn status_json(st: &SyncStatus) -> PyResult<String> {
    serde_json::to_string(st)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("status: {e}")))
}

/// A `JournalState` as a dict.
pub(crate) fn journal_state_dict<'py>(
    py: Python<'py>,
    s: &JournalState,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("journal_id", s.journal_id.to_string())?;
    d.set_item("first_lsn", s.first_lsn)?;
    d.set_item("next_lsn", s.next_lsn)?;
    d.set_item("durable_lsn", s.durable_lsn)?;
    d.set_item("acked_lsn", s.acked_lsn)?;
    d.set_item("acked_at_ms", s.acked_at_ms)?;
    d.set_item("segments", s.segments)?;
    d.set_item("poisoned", s.poisoned.clone())?;
    Ok(d)
}

/// Quarantined entries as a list of dicts.
pub(crate) fn quarantined_list<'py>(
    py: Python<'py>,
    entries: &[QuarantinedEntry],
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for q in entries {
        let d = PyDict::new(py);
        d.set_item("lsn", q.lsn)?;
        d.set_item("kind", q.kind)?;
        d.set_item("summary", &q.summary)?;
        d.set_item("error", &q.error)?;
        d.set_item("rejected_at_ms", q.rejected_at_ms)?;
        list.append(d)?;
    }
    Ok(list)
}
