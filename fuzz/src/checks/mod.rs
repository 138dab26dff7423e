//! The property checks behind syncjournal's fuzz targets, one module per target, and the
//! input formats they decode.
//!
//! This tree is compiled twice: as `syncjournal_fuzz::checks` for the libFuzzer targets in
//! `fuzz/fuzz_targets/`, and as a module of the integration test `tests/fuzz_corpus.rs`
//! (`#[path = "../fuzz/src/checks/mod.rs"]`), which replays the committed corpus on stable. It
//! must therefore depend on nothing but syncjournal, std, tempfile, uuid, serde and rusqlite,
//! and name its modules from `crate::checks` (both crates mount the tree there).
//!
//! Every `check_*` function accepts arbitrary bytes and never panics except when a property of
//! the library does not hold; the message of the failed assertion names the property.
//!
//! Inputs of `scan_segment`, `recover_open` and `journal_dir` are small "programs" read by
//! [`common::Bytes`]: a mode byte, then the parameters of generated segments
//! ([`segments::SegSpec`]: records, then mutations such as bit flips, zeroed ranges,
//! truncation). Missing bytes read as zero, so every input decodes. The `encode` methods write
//! the same format, for the seed corpus generator.

pub mod common;
pub mod decode_record;
pub mod dirs;
pub mod journal_dir;
pub mod journal_model;
pub mod recover_open;
pub mod scan_segment;
pub mod segments;
