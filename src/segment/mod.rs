//! One segment file's lifecycle: naming, creation with reserved space, mapping, removal.
//! `mmap` holds all of the crate's `unsafe` code.

mod file;
mod mmap;

pub use file::{
    ACK_FILE, FORENSICS_DIR, HEAD_FILE, LOCK_FILE, REPLAY_STATE_FILE, SEGMENT_EXTENSION,
    SEGMENT_SEQ_MAX, TMP_SUFFIX, is_own_tmp_name, is_replay_tmp_name, parse_segment_file_name,
    replay_tmp_name, segment_file_name,
};
pub(crate) use file::{
    Access, DirLock, allocate, create_segment, file_type_name, inject, open_journal_file,
    open_segment_rw, sync_dir,
};
pub(crate) use mmap::{HeadMap, MapWriter, ReadMap, SharedMap};
