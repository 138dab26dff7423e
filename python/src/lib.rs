//! The native part of the Python package `syncjournal` (`syncjournal._native`): thin PyO3
//! wrappers that convert Python values to the crate's types and call the crate. Nothing of the
//! journal, the cache or the replay is implemented here; the Python package (`syncjournal/`)
//! adds the dataclasses, the context manager and the SQLAlchemy integration on top.
#![deny(unsafe_code)]

mod changes;
mod errors;
mod reports;
mod resolver;
mod store;
mod values;

use pyo3::prelude::*;

/// The native module. Use the package `syncjournal`, which re-exports what is public.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<changes::ChangeSet>()?;
    m.add_class::<store::Store>()?;
    m.add("CRATE_VERSION", env!("CARGO_PKG_VERSION"))?;
    // The SQLite the crate runs (bundled), not the one of Python's sqlite3 module.
    m.add("SQLITE_VERSION", syncjournal::rusqlite::version())?;
    Ok(())
}
