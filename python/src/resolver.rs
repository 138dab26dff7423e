//! A Python callable as the crate's conflict resolver: the conflict handed over as a
//! `syncjournal.Conflict` dataclass, the answer (`"local"`, `"target"`, `"delete"`, a dict of
//! columns to write, or an exception: refused) turned back into a `Resolution`. The call
//! takes the GIL on the replay thread, which holds no GIL of its own (every store call that
//! can sync releases it).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use syncjournal::{Conflict, Mutation, Resolution, Resolver};

use crate::values::{to_columns, to_py};

/// A dict of `cols` (column name → Python value).
fn columns<'py>(
    py: Python<'py>,
    cols: &[(String, syncjournal::Value)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in cols {
        d.set_item(k, to_py(py, v)?)?;
    }
    Ok(d)
}

/// The local mutation as a dict: `op` (`"insert"`, `"update"`, `"upsert"`, `"delete"`) and
/// `values` (the other columns it sets; empty for a delete).
fn mutation<'py>(py: Python<'py>, m: &Mutation) -> PyResult<Bound<'py, PyDict>> {
    let (op, values): (&str, &[(String, syncjournal::Value)]) = match m {
        Mutation::Insert { values, .. } => ("insert", values),
        Mutation::Update { values, .. } => ("update", values),
        Mutation::Upsert { values, .. } => ("upsert", values),
        Mutation::Delete { .. } => ("delete", &[]),
    };
    let d = PyDict::new(py);
    d.set_item("op", op)?;
    d.set_item("values", columns(py, values)?)?;
    Ok(d)
}

/// `c` as a `syncjournal.Conflict`.
fn conflict<'py>(py: Python<'py>, c: &Conflict<'_>) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("table", c.table)?;
    kw.set_item("key", columns(py, c.key)?)?;
    kw.set_item("kind", c.kind.as_str())?;
    kw.set_item("base_known", c.base.is_some())?;
    kw.set_item(
        "base",
        match c.base {
            Some(Some(row)) => Some(columns(py, row)?),
            _ => None,
        },
    )?;
    kw.set_item(
        "local",
        match c.local {
            Some(m) => Some(mutation(py, m)?),
            None => None,
        },
    )?;
    kw.set_item(
        "current",
        match c.current {
            Some(row) => Some(columns(py, row)?),
            None => None,
        },
    )?;
    kw.set_item("local_hlc", c.local_hlc)?;
    kw.set_item("local_journal", c.local_journal.to_string())?;
    kw.set_item("remote_hlc", c.remote_hlc)?;
    kw.set_item("remote_journal", c.remote_journal.to_string())?;
    kw.set_item("remote_seq", c.remote_seq)?;
    kw.set_item("local_is_newer", c.local_is_newer())?;
    py.import("syncjournal._types")?
        .getattr("Conflict")?
        .call((), Some(&kw))
}

/// What the resolver's answer `r` means, for a conflict on `table`.
fn resolution(r: &Bound<'_, PyAny>, table: &str) -> Resolution {
    if r.cast::<PyString>().is_ok() {
        return match r.extract::<String>().as_deref() {
            Ok("local") => Resolution::KeepLocal,
            Ok("target") => Resolution::KeepTarget,
            Ok("delete") => Resolution::Delete,
            _ => Resolution::Refuse(format!(
                "the conflict resolver returned {}: return \"local\", \"target\", \"delete\" or a dict of the columns to write, or raise to refuse",
                r.repr()
                    .map_or_else(|_| "a string".into(), |x| x.to_string())
            )),
        };
    }
    if r.cast::<PyDict>().is_ok() {
        return match to_columns(r, table, "the resolver's row") {
            Ok(cols) => Resolution::Write(cols),
            Err(e) => Resolution::Refuse(format!("the conflict resolver's row: {e}")),
        };
    }
    Resolution::Refuse(format!(
        "the conflict resolver returned {}: return \"local\", \"target\", \"delete\" or a dict of the columns to write, or raise to refuse",
        r.repr()
            .map_or_else(|_| "an object".into(), |x| x.to_string())
    ))
}

std::thread_local! {
    /// True while a resolver runs on this thread: inside the store's sync.
    static IN_RESOLVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while a conflict resolver runs on this thread (the store refuses calls then: they
/// would wait for the sync the resolver runs in).
pub(crate) fn in_resolver() -> bool {
    IN_RESOLVER.with(|f| f.get())
}

/// Marks this thread as running a resolver until dropped.
struct Resolving;

impl Resolving {
    fn begin() -> Resolving {
        IN_RESOLVER.with(|f| f.set(true));
        Resolving
    }
}

impl Drop for Resolving {
    fn drop(&mut self) {
        IN_RESOLVER.with(|f| f.set(false));
    }
}

/// `func` (a Python callable taking a `syncjournal.Conflict`) as a resolver. An exception it
/// raises refuses the entry, with the exception's text as the reason.
pub(crate) fn python_resolver(func: Py<PyAny>) -> Resolver {
    Arc::new(move |c: &Conflict<'_>| {
        Python::attach(|py| {
            let _resolving = Resolving::begin();
            let answer = conflict(py, c).and_then(|arg| func.bind(py).call1((arg,)));
            match answer {
                Ok(r) => resolution(&r, c.table),
                Err(e) => Resolution::Refuse(format!("the conflict resolver raised {e}")),
            }
        })
    })
}
