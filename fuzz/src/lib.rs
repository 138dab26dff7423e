//! Shared checking logic of syncjournal's fuzz targets.
//!
//! The property checks live in [`checks`] (`src/checks.rs`), which depends only on syncjournal,
//! std, tempfile and uuid, so that the crate's integration test `tests/fuzz_corpus.rs` can include
//! the very same file with `#[path]` and replay the corpus on stable, without libFuzzer.

pub mod checks;
