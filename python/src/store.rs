//! `Store`: the crate's `Store` for Python. Every call that can block (opening, which may wait
//! for the journal's lock; apply's durability wait; reads; sync; waiting for the target;
//! closing) releases the GIL, so other Python threads run meanwhile and concurrent applies
//! share the journal's group commit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyTuple};
use syncjournal::{
    ConflictPolicies, ConflictPolicy, JournalOptions, PersistMode, RejectPolicy, ReplayOptions,
    StoreOptions, TargetOptions, Value,
};

use crate::changes::change_set_from_py;
use crate::errors::{closed, to_exception, to_pyerr};
use crate::reports::{journal_state_dict, quarantined_list, report_dict, status_json};
use crate::values::{to_py, to_value};

type Inner = syncjournal::Store;

/// How long `wait_synced` waits between checks for a KeyboardInterrupt.
const WAIT_SLICE_MS: u64 = 100;

/// The native store. Use `syncjournal.Store`, which adds the context manager and the
/// dataclasses.
#[pyclass(frozen, subclass, module = "syncjournal._native", name = "Store")]
pub(crate) struct Store {
    inner: Mutex<Option<Arc<Inner>>>,
    cache_path: PathBuf,
    journal_dir: PathBuf,
    has_target: bool,
}

impl Store {
    fn get(&self, py: Python<'_>) -> PyResult<Arc<Inner>> {
        if crate::resolver::in_resolver() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "a conflict resolver must not call the store: it runs inside the store's sync, and the call would wait for that sync to end",
            ));
        }
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| closed(py))
    }
}

fn persist_mode(name: &str, interval_ms: u64) -> PyResult<PersistMode> {
    match name {
        "sync" => Ok(PersistMode::Sync),
        "batched" => Ok(PersistMode::Batched {
            interval: Duration::from_millis(interval_ms),
        }),
        "buffered" => Ok(PersistMode::Buffered),
        other => Err(PyValueError::new_err(format!(
            "persist_mode {other:?}: use \"sync\" (durable before apply returns, the default), \"batched\" or \"buffered\""
        ))),
    }
}

/// The conflict policies a ``conflicts`` dict names: table → policy (``"*"``: every other
/// table), a policy being a name or a callable (a resolver, see `resolver.rs`).
fn conflict_policies(
    by_table: std::collections::BTreeMap<String, Bound<'_, PyAny>>,
    detect: bool,
) -> PyResult<ConflictPolicies> {
    let mut p = ConflictPolicies::new().detect(detect);
    for (table, value) in by_table {
        let policy = if let Ok(name) = value.extract::<String>() {
            match name.as_str() {
                "last_writer_wins" => ConflictPolicy::LastWriterWins,
                "target_wins" => ConflictPolicy::TargetWins,
                "reject" => ConflictPolicy::Reject,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "conflict policy {other:?} for table {table:?}: use \"last_writer_wins\" (the default), \"target_wins\", \"reject\" or a resolver (a callable)"
                    )));
                }
            }
        } else if value.is_callable() {
            ConflictPolicy::Resolve(crate::resolver::python_resolver(value.unbind()))
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "conflict policy for table {table:?}: a policy name or a resolver (a callable taking a syncjournal.Conflict), not {}",
                value
                    .get_type()
                    .fully_qualified_name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            )));
        };
        p = if table == "*" {
            p.default_policy(policy)
        } else {
            p.table(table, policy)
        };
    }
    Ok(p)
}

fn reject_policy(name: &str) -> PyResult<RejectPolicy> {
    match name {
        "stop" => Ok(RejectPolicy::Stop),
        "quarantine" => Ok(RejectPolicy::Quarantine),
        other => Err(PyValueError::new_err(format!(
            "reject_policy {other:?}: use \"stop\" (the default) or \"quarantine\""
        ))),
    }
}

/// Binds `params` (a sequence, or a mapping for named parameters) to `stmt`.
fn bind(
    stmt: &mut syncjournal::rusqlite::Statement<'_>,
    params: &Params,
) -> syncjournal::rusqlite::Result<()> {
    use syncjournal::rusqlite::Error as E;
    match params {
        Params::Positional(values) => {
            let expected = stmt.parameter_count();
            if values.len() != expected {
                return Err(E::InvalidParameterCount(values.len(), expected));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v)?;
            }
        }
        Params::Named(values) => {
            for (name, v) in values {
                let index = [":", "@", "$"]
                    .iter()
                    .find_map(|p| stmt.parameter_index(&format!("{p}{name}")).ok().flatten())
                    .ok_or_else(|| E::InvalidParameterName(name.clone()))?;
                stmt.raw_bind_parameter(index, v)?;
            }
        }
    }
    Ok(())
}

type Rows = Vec<Vec<Value>>;

/// Runs one statement on the cache's read-only connection: its column names and rows.
fn run_query(
    conn: &syncjournal::rusqlite::Connection,
    sql: &str,
    params: &Params,
) -> syncjournal::rusqlite::Result<(Vec<String>, Rows)> {
    let mut stmt = conn.prepare(sql)?;
    bind(&mut stmt, params)?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let n = names.len();
    let mut rows = stmt.raw_query();
    let mut out: Rows = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            (0..n)
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<_, _>>()?,
        );
    }
    Ok((names, out))
}

fn rows_to_py<'py>(py: Python<'py>, rows: Rows) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for row in rows {
        let items = row
            .iter()
            .map(|v| to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        list.append(PyTuple::new(py, items)?)?;
    }
    Ok(list)
}

enum Params {
    Positional(Vec<Value>),
    Named(Vec<(String, Value)>),
}

fn params_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Params> {
    if let Ok(m) = obj.cast::<PyMapping>() {
        let mut out = Vec::new();
        for item in m.items()?.iter() {
            let (k, v): (String, Bound<'_, PyAny>) = item.extract()?;
            let value = to_value(&v, "(query)", &k)?;
            out.push((k, value));
        }
        return Ok(Params::Named(out));
    }
    let mut out = Vec::new();
    for (i, v) in obj.try_iter()?.enumerate() {
        out.push(to_value(&v?, "(query)", &format!("parameter {}", i + 1))?);
    }
    Ok(Params::Positional(out))
}

#[pymethods]
impl Store {
    /// Opens (or creates) the journal in ``journal_dir`` and the cache at ``cache_path``,
    /// catches the cache up with the journal, and starts the background sync if a ``target``
    /// is given. See ``syncjournal.Store`` for the options.
    #[new]
    #[pyo3(signature = (
        journal_dir,
        cache_path,
        *,
        schema = None,
        target = None,
        create_target = false,
        target_schema = None,
        background_sync = true,
        sync_interval_ms = 1000,
        persist_mode = "sync",
        persist_interval_ms = 10,
        reject_policy = "stop",
        conflicts = None,
        detect_conflicts = true,
        lock_wait_ms = StoreOptions::LOCK_WAIT_MS_DEFAULT,
        stalled_after_ms = 300_000,
        retry_attempts_max = 5,
        target_busy_timeout_ms = 5000,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        journal_dir: PathBuf,
        cache_path: PathBuf,
        schema: Option<String>,
        target: Option<PathBuf>,
        create_target: bool,
        target_schema: Option<String>,
        background_sync: bool,
        sync_interval_ms: u64,
        persist_mode: &str,
        persist_interval_ms: u64,
        reject_policy: &str,
        conflicts: Option<std::collections::BTreeMap<String, Bound<'_, PyAny>>>,
        detect_conflicts: bool,
        lock_wait_ms: u64,
        stalled_after_ms: u64,
        retry_attempts_max: u32,
        target_busy_timeout_ms: u64,
    ) -> PyResult<Self> {
        let journal = JournalOptions::new()
            .persist_mode(self::persist_mode(persist_mode, persist_interval_ms)?)
            .lock_wait_ms(lock_wait_ms);
        let replay = ReplayOptions::new()
            .sync_interval_ms(sync_interval_ms)
            .reject_policy(self::reject_policy(reject_policy)?)
            .conflicts(conflict_policies(
                conflicts.unwrap_or_default(),
                detect_conflicts,
            )?)
            .retry_attempts_max(retry_attempts_max);
        let mut opts = StoreOptions::new()
            .journal(journal)
            .replay(replay)
            .background_sync(background_sync)
            .stalled_after_ms(stalled_after_ms);
        if let Some(sql) = schema {
            opts = opts.cache_schema(sql);
        }
        let has_target = target.is_some();
        if let Some(target) = target {
            let mut topts = TargetOptions::new()
                .create_if_missing(create_target)
                .busy_timeout_ms(target_busy_timeout_ms);
            if let Some(sql) = target_schema {
                topts = topts.create_schema(sql);
            }
            // The target is passed through as the crate takes it.
            opts = opts.target(target, topts);
        }
        let (jd, cp) = (journal_dir.clone(), cache_path.clone());
        let store = py
            .detach(move || Inner::open(jd, cp, opts))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(Store {
            inner: Mutex::new(Some(Arc::new(store))),
            cache_path,
            journal_dir,
            has_target,
        })
    }

    /// Applies a change set (a ``ChangeSet``, a mutation dict, or a list of them): journaled
    /// durably (by default) and applied to the cache, atomically. Returns its LSN.
    fn apply(&self, py: Python<'_>, changes: &Bound<'_, PyAny>) -> PyResult<u64> {
        let cs = change_set_from_py(changes)?;
        let store = self.get(py)?;
        py.detach(move || store.apply(&cs))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Runs ``sql`` on the cache's read-only connection and returns the rows as tuples.
    #[pyo3(signature = (sql, params = None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let params = match params {
            Some(p) if !p.is_none() => params_from_py(p)?,
            _ => Params::Positional(Vec::new()),
        };
        let store = self.get(py)?;
        let (_, rows) = py
            .detach(move || store.read(|conn| run_query(conn, &sql, &params)))
            .map_err(|e| to_pyerr(py, &e))?;
        rows_to_py(py, rows)
    }

    /// Like ``read``, and also returns the result's column names: ``(names, rows)``.
    #[pyo3(signature = (sql, params = None))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Vec<String>, Bound<'py, PyList>)> {
        let params = match params {
            Some(p) if !p.is_none() => params_from_py(p)?,
            _ => Params::Positional(Vec::new()),
        };
        let store = self.get(py)?;
        let (names, rows) = py
            .detach(move || store.read(|conn| run_query(conn, &sql, &params)))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok((names, rows_to_py(py, rows)?))
    }

    /// Force sync: applies every durable entry to the target now. Returns the report as a dict.
    fn sync_now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.get(py)?;
        let report = py.detach(move || store.sync_now());
        Ok(report_dict(py, &report)?.into_any())
    }

    /// Pulls the target's change log into the cache now (other machines' changes). Returns
    /// a dict: ``applied``, ``cursor_seq``, ``head_seq``, ``held_back`` (a dict naming the
    /// change the pull stopped before, or None) and ``error`` (a ``syncjournal.Error``
    /// instance, not raised, or None).
    fn pull_now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.get(py)?;
        let r = py.detach(move || store.pull_now());
        let d = PyDict::new(py);
        d.set_item("applied", r.applied)?;
        d.set_item("cursor_seq", r.cursor_seq)?;
        d.set_item("head_seq", r.head_seq)?;
        match &r.held_back {
            Some(h) => {
                let hb = PyDict::new(py);
                hb.set_item("seq", h.seq)?;
                hb.set_item("table", &h.table)?;
                hb.set_item("key", &h.key)?;
                hb.set_item("local_lsn", h.local_lsn)?;
                d.set_item("held_back", hb)?;
            }
            None => d.set_item("held_back", py.None())?,
        }
        match &r.error {
            Some(e) => d.set_item("error", to_exception(py, e)?)?,
            None => d.set_item("error", py.None())?,
        }
        Ok(d.into_any())
    }

    /// The pull's status in its JSON form (``syncjournal.Store.pull_status`` makes a dict of
    /// it).
    fn pull_status_json(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.get(py)?;
        let st = py
            .detach(move || store.pull_status())
            .map_err(|e| to_pyerr(py, &e))?;
        serde_json::to_string(&st)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("pull status: {e}")))
    }

    /// Rebuilds the cache from one snapshot of the target, keeping the journal's entries
    /// not on the target yet; returns the report in its JSON form.
    fn reseed_json(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.get(py)?;
        let r = py
            .detach(move || store.reseed())
            .map_err(|e| to_pyerr(py, &e))?;
        serde_json::to_string(&r)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("reseed: {e}")))
    }

    /// The conflicts this store's entries met on the target, newest first, at most `limit`, in
    /// their JSON form (``syncjournal.Store.conflicts`` makes dicts of them).
    #[pyo3(signature = (limit = 100))]
    fn conflicts_json(&self, py: Python<'_>, limit: usize) -> PyResult<String> {
        let store = self.get(py)?;
        let list = py
            .detach(move || store.conflicts(limit))
            .map_err(|e| to_pyerr(py, &e))?;
        serde_json::to_string(&list)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("conflicts: {e}")))
    }

    /// The sync status in its JSON form (``syncjournal.Store.status`` makes a dataclass of it).
    fn status_json(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.get(py)?;
        let st = py
            .detach(move || store.status())
            .map_err(|e| to_pyerr(py, &e))?;
        status_json(&st)
    }

    /// Waits until the target holds ``lsn``, for at most ``timeout`` seconds (``None``: no
    /// limit). Returns True once it does, False if the time ran out. Ctrl-C interrupts it.
    #[pyo3(signature = (lsn, timeout = None))]
    fn wait_synced(&self, py: Python<'_>, lsn: u64, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(t.min(1.0e9)))
            }
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a number of seconds >= 0 or None, not {t}"
                )));
            }
        };
        let store = self.get(py)?;
        loop {
            let slice = Duration::from_millis(WAIT_SLICE_MS);
            let slice = match deadline {
                Some(d) => slice.min(d.saturating_duration_since(Instant::now())),
                None => slice,
            };
            let s = Arc::clone(&store);
            let done = py
                .detach(move || s.wait_synced(lsn, slice))
                .map_err(|e| to_pyerr(py, &e))?;
            if done {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// The journal's positions, as a dict.
    fn journal_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.get(py)?;
        Ok(journal_state_dict(py, &store.journal_state())?.into_any())
    }

    /// Why the store refuses writes until reopened, if it does.
    fn poisoned(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.get(py)?.poisoned())
    }

    /// Entries the target refused under the quarantine policy, as dicts.
    fn quarantined<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.get(py)?;
        let entries = py
            .detach(move || store.quarantined())
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(quarantined_list(py, &entries)?.into_any())
    }

    /// Applies a quarantined entry again.
    fn retry_quarantined(&self, py: Python<'_>, lsn: u64) -> PyResult<()> {
        let store = self.get(py)?;
        py.detach(move || store.retry_quarantined(lsn))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Removes a quarantined entry for good. Returns True if there was one.
    fn discard_quarantined(&self, py: Python<'_>, lsn: u64) -> PyResult<bool> {
        let store = self.get(py)?;
        py.detach(move || store.discard_quarantined(lsn))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Stops the background sync and closes the journal. Later calls raise
    /// ``syncjournal.StoreClosed``; closing twice is allowed. A call still running in another
    /// thread finishes first (the journal closes when the last one returns).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if crate::resolver::in_resolver() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "a conflict resolver must not close the store: it runs inside the store's sync",
            ));
        }
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(store) = taken {
            py.detach(move || match Arc::try_unwrap(store) {
                Ok(store) => store.close(),
                Err(shared) => {
                    drop(shared);
                    Ok(())
                }
            })
            .map_err(|e| to_pyerr(py, &e))?;
        }
        Ok(())
    }

    /// True once ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The cache database's path.
    #[getter]
    fn cache_path(&self) -> String {
        self.cache_path.display().to_string()
    }

    /// The journal directory.
    #[getter]
    fn journal_dir(&self) -> String {
        self.journal_dir.display().to_string()
    }

    /// True if a target was given.
    #[getter]
    fn has_target(&self) -> bool {
        self.has_target
    }
}
