//! The crate's layered errors as Python exceptions: each error becomes an instance of a class
//! of `syncjournal.errors` (a hierarchy under `syncjournal.Error`) carrying the crate's message
//! and the error's fields as attributes.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use syncjournal::{CacheError, Error, JournalError, TargetError};

/// The name of the Python class in `syncjournal.errors` for `e`.
fn class_name(e: &Error) -> &'static str {
    match e {
        Error::Journal(j) => match j {
            JournalError::Locked { .. } => "Locked",
            JournalError::Poisoned { .. } => "Poisoned",
            JournalError::DiskFull { .. } => "DiskFull",
            _ if e.is_corruption() => "Corrupt",
            _ => "JournalError",
        },
        Error::Cache(c) => match c {
            CacheError::ChangeRefused { .. } => "ChangeRefused",
            CacheError::EventTooLarge { .. } | CacheError::EventUnencodable { .. } => {
                "ChangeTooLarge"
            }
            CacheError::AppliedInDoubt { .. } => "InDoubt",
            CacheError::Mismatch { .. } | CacheError::Ahead { .. } | CacheError::Behind { .. } => {
                "CacheMismatch"
            }
            CacheError::Unguarded { .. } => "Unguarded",
            _ => "CacheError",
        },
        Error::Target(t) => match t {
            TargetError::EntryRejected { .. } => "EntryRejected",
            TargetError::Unavailable { .. } | TargetError::Missing { .. } => "TargetUnavailable",
            TargetError::Damaged { .. } => "TargetDamaged",
            TargetError::Unusable { .. }
            | TargetError::Wal { .. }
            | TargetError::SchemaMismatch { .. } => "TargetUnusable",
            TargetError::NoTarget => "NoTarget",
            _ => "TargetError",
        },
        Error::InvalidOption { .. } => "InvalidOption",
        _ => "Error",
    }
}

/// Sets the attributes that describe `e` on the exception instance `exc`.
fn set_attributes(py: Python<'_>, exc: &Bound<'_, PyAny>, e: &Error) -> PyResult<()> {
    exc.setattr("transient", e.is_transient())?;
    exc.setattr("sqlite_code", e.sqlite().and_then(|s| s.code()))?;
    match e {
        Error::Journal(JournalError::Locked { dir, holder_pid }) => {
            exc.setattr("dir", dir.display().to_string())?;
            exc.setattr("holder_pid", *holder_pid)?;
        }
        Error::Journal(JournalError::Poisoned { reason }) => exc.setattr("reason", reason)?,
        Error::Journal(JournalError::Corrupt(c)) => {
            exc.setattr("segment", c.segment.display().to_string())?;
            exc.setattr("offset", c.offset)?;
            exc.setattr("torn_tail", c.torn_tail)?;
        }
        Error::Cache(CacheError::ChangeRefused { reason }) => exc.setattr("reason", reason)?,
        Error::Cache(CacheError::AppliedInDoubt {
            lsn,
            durable,
            cause,
        }) => {
            exc.setattr("lsn", *lsn)?;
            exc.setattr("durable", *durable)?;
            let cause = to_exception(py, cause)?;
            exc.setattr("__cause__", cause)?;
        }
        Error::Target(TargetError::EntryRejected { lsn, entry, reason }) => {
            exc.setattr("lsn", *lsn)?;
            exc.setattr("entry", entry)?;
            exc.setattr("reason", reason)?;
        }
        _ => {}
    }
    Ok(())
}

/// The Python exception instance for `e` (not raised).
pub(crate) fn to_exception<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let module = py.import("syncjournal.errors")?;
    let cls = module.getattr(class_name(e))?;
    let exc = cls.call1((e.to_string(),))?;
    set_attributes(py, &exc, e)?;
    Ok(exc)
}

/// The Python exception to raise for `e`.
pub(crate) fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    match to_exception(py, e) {
        Ok(exc) => PyErr::from_value(exc),
        // The errors module could not be imported or built the exception: still say what the
        // crate said.
        Err(import_error) => {
            let err = PyRuntimeError::new_err(e.to_string());
            err.set_cause(py, Some(import_error));
            err
        }
    }
}

/// `syncjournal.StoreClosed`: a call on a store after `close()`.
pub(crate) fn closed(py: Python<'_>) -> PyErr {
    match py
        .import("syncjournal.errors")
        .and_then(|m| m.getattr("StoreClosed"))
        .and_then(|cls| cls.call1(("the store is closed",)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}
