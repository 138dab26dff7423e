//! `ChangeSet`: the Python builder of the crate's change set, and the conversion of plain
//! dicts (`{"op": "upsert", "table": …, "key": {…}, "values": {…}}`) into one.

use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyString};
use syncjournal::Mutation;

use crate::values::{to_columns, to_py};

/// An atomic change set: row mutations applied together or not at all, at the cache and at
/// the target. The methods add a mutation and return the change set, so they chain:
///
///     ChangeSet().upsert("hosts", {"id": 7}, {"name": "web-7"}).delete("hosts", {"id": 3})
///
/// Keys and values are dicts of column names to ``None``, ``int``, ``float``, ``str`` or
/// ``bytes``; anything else raises ``TypeError`` naming the column.
#[pyclass(frozen, module = "syncjournal", name = "ChangeSet")]
pub(crate) struct ChangeSet {
    inner: Mutex<syncjournal::ChangeSet>,
}

impl ChangeSet {
    /// A copy of the crate's change set (cheap next to a durable apply; the lock is not held
    /// while applying).
    pub(crate) fn snapshot(&self) -> syncjournal::ChangeSet {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(slf: &Bound<'_, Self>, m: Mutation) {
        let me = slf.get();
        me.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mutations
            .push(m);
    }
}

fn empty_dict<'py>(py: Python<'py>, values: Option<&Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    values
        .cloned()
        .unwrap_or_else(|| PyDict::new(py).into_any())
}

#[pymethods]
impl ChangeSet {
    /// An empty change set.
    #[new]
    fn new() -> Self {
        ChangeSet {
            inner: Mutex::new(syncjournal::ChangeSet::new()),
        }
    }

    /// Adds an insert of a new row (refused at apply if a row with ``key`` exists).
    #[pyo3(signature = (table, key, values=None))]
    fn insert<'py>(
        slf: Bound<'py, Self>,
        table: &str,
        key: &Bound<'py, PyAny>,
        values: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Self>> {
        let values = empty_dict(slf.py(), values);
        let m = Mutation::Insert {
            table: table.to_owned(),
            key: to_columns(key, table, "key")?,
            values: to_columns(&values, table, "values")?,
        };
        Self::push(&slf, m);
        Ok(slf)
    }

    /// Adds an update of the given columns of the row with ``key`` (refused at apply if there
    /// is no such row).
    fn update<'py>(
        slf: Bound<'py, Self>,
        table: &str,
        key: &Bound<'py, PyAny>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let m = Mutation::Update {
            table: table.to_owned(),
            key: to_columns(key, table, "key")?,
            values: to_columns(values, table, "values")?,
        };
        Self::push(&slf, m);
        Ok(slf)
    }

    /// Adds an upsert: insert the row, or set the given columns if a row with ``key`` exists.
    #[pyo3(signature = (table, key, values=None))]
    fn upsert<'py>(
        slf: Bound<'py, Self>,
        table: &str,
        key: &Bound<'py, PyAny>,
        values: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Self>> {
        let values = empty_dict(slf.py(), values);
        let m = Mutation::Upsert {
            table: table.to_owned(),
            key: to_columns(key, table, "key")?,
            values: to_columns(&values, table, "values")?,
        };
        Self::push(&slf, m);
        Ok(slf)
    }

    /// Adds a delete of the row with ``key`` (deleting a missing row changes nothing).
    fn delete<'py>(
        slf: Bound<'py, Self>,
        table: &str,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let m = Mutation::Delete {
            table: table.to_owned(),
            key: to_columns(key, table, "key")?,
        };
        Self::push(&slf, m);
        Ok(slf)
    }

    /// The mutations, as dicts ``{"op", "table", "key", "values"}`` (in order).
    fn mutations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let cs = self.snapshot();
        let list = PyList::empty(py);
        for m in &cs.mutations {
            list.append(mutation_to_dict(py, m)?)?;
        }
        Ok(list)
    }

    fn __len__(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mutations
            .len()
    }

    fn __repr__(&self) -> String {
        let cs = self.snapshot();
        let parts: Vec<String> = cs.mutations.iter().map(|m| m.to_string()).collect();
        format!("ChangeSet([{}])", parts.join("; "))
    }
}

fn mutation_to_dict<'py>(py: Python<'py>, m: &Mutation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("op", m.op())?;
    d.set_item("table", m.table())?;
    let cols = |c: &[(String, syncjournal::Value)]| -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in c {
            d.set_item(k, to_py(py, v)?)?;
        }
        Ok(d)
    };
    d.set_item("key", cols(m.key())?)?;
    d.set_item("values", cols(m.values())?)?;
    Ok(d)
}

/// One mutation from a plain dict.
fn mutation_from_dict(d: &Bound<'_, PyMapping>) -> PyResult<Mutation> {
    let get = |name: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        match d.get_item(name) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(d.py()) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let op: String = get("op")?
        .ok_or_else(|| {
            PyValueError::new_err("a mutation dict needs \"op\": insert, update, upsert or delete")
        })?
        .extract()?;
    let table: String = get("table")?
        .ok_or_else(|| PyValueError::new_err("a mutation dict needs \"table\""))?
        .extract()?;
    let key = get("key")?.ok_or_else(|| {
        PyValueError::new_err(format!("mutation on table {table:?} needs \"key\""))
    })?;
    let key = to_columns(&key, &table, "key")?;
    let values = match get("values")? {
        Some(v) if !v.is_none() => to_columns(&v, &table, "values")?,
        _ => Vec::new(),
    };
    Ok(match op.as_str() {
        "insert" => Mutation::Insert { table, key, values },
        "update" => Mutation::Update { table, key, values },
        "upsert" => Mutation::Upsert { table, key, values },
        "delete" if values.is_empty() => Mutation::Delete { table, key },
        "delete" => {
            return Err(PyValueError::new_err(format!(
                "delete on table {table:?} takes no \"values\""
            )));
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown op {other:?}: use insert, update, upsert or delete"
            )));
        }
    })
}

/// What `Store.apply` accepts: a `ChangeSet`, one mutation dict, or an iterable of them.
pub(crate) fn change_set_from_py(obj: &Bound<'_, PyAny>) -> PyResult<syncjournal::ChangeSet> {
    if let Ok(cs) = obj.cast::<ChangeSet>() {
        return Ok(cs.get().snapshot());
    }
    if let Ok(d) = obj.cast::<PyMapping>() {
        return Ok(syncjournal::ChangeSet::new().push(mutation_from_dict(d)?));
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "apply takes a ChangeSet, a mutation dict or a list of them, not a str",
        ));
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "apply takes a ChangeSet, a mutation dict or a list of them, not {}",
            obj.get_type()
                .fully_qualified_name()
                .map_or_else(|_| "?".to_string(), |n| n.to_string())
        ))
    })?;
    let mut cs = syncjournal::ChangeSet::new();
    for item in iter {
        let item = item?;
        let d = item.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(
                "each mutation must be a dict {\"op\", \"table\", \"key\", \"values\"}",
            )
        })?;
        cs = cs.push(mutation_from_dict(d)?);
    }
    Ok(cs)
}
