//! Shared checking logic of syncjournal's fuzz targets.
//!
//! The property checks live in [`checks`] (`src/checks.rs`) and, for the model-checking target
//! `journal_model`, in [`model`] (`src/model.rs`). They depend only on syncjournal, std,
//! tempfile, uuid, serde and rusqlite (all of them dependencies of the main crate too), so that
//! the crate's integration test `tests/fuzz_corpus.rs` can include the very same files with
//! `#[path]` and replay the corpus on stable, without libFuzzer.

pub mod checks;
pub mod model;
