//! One segment file's lifecycle: naming, creation with reserved space, mapping, removal.
//! `mmap` holds all of the crate's `unsafe` code.

mod file;
mod mmap;

pub use file::{
    ACK_FILE, FORENSICS_DIR, HEAD_FILE, LOCK_FILE, SEGMENT_EXTENSION, SEGMENT_SEQ_MAX, TMP_SUFFIX,
    parse_segment_file_name, segment_file_name,
};
pub(crate) use file::{DirLock, allocate, create_segment, inject, open_segment_rw, sync_dir};
pub(crate) use mmap::{HeadMap, MapWriter, ReadMap, SharedMap};
