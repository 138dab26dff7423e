//! Shared checking logic of syncjournal's fuzz targets.
//!
//! The property checks live in [`checks`] (`src/checks/`), one module per target
//! (`checks::decode_record`, `checks::scan_segment`, `checks::recover_open`,
//! `checks::journal_model`) beside what they share (`checks::common`, `checks::segments`).
//! They depend only on syncjournal, std, tempfile, uuid, serde and rusqlite (all of them
//! dependencies of the main crate too), so that the crate's integration test
//! `tests/fuzz_corpus.rs` can include the very same files with `#[path]` and replay the corpus
//! on stable, without libFuzzer.

pub mod checks;
