//! Segment files on disk: names, creation with reserved space, directory syncs, removal, and
//! the journal directory's lock file.

use crate::error::JournalError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FallocateFlags;

use crate::error::{Error, Result, is_disk_full};
use crate::fault::{FaultInjector, IoOp};
use crate::format::SegmentHeader;

/// Extension of segment files.
pub const SEGMENT_EXTENSION: &str = "sjl";
/// Suffix of a segment being created; such files are removed on open.
pub const TMP_SUFFIX: &str = ".tmp";
/// The lock file's name.
pub const LOCK_FILE: &str = "LOCK";
/// The acknowledgement file's name.
pub const ACK_FILE: &str = "ACK";
/// The file where the owner publishes its durable LSN for followers in other processes.
pub const HEAD_FILE: &str = "HEAD";
/// Directory (inside the journal directory) where bytes cut by recovery are kept.
pub const FORENSICS_DIR: &str = "forensics";
/// File (in the journal directory) where the replayer keeps its last outcome.
pub const REPLAY_STATE_FILE: &str = "replay.json";
pub use crate::format::SEGMENT_SEQ_MAX;

/// True for the temporary names syncjournal itself creates and abandons only by crashing:
/// `<segment file name>.tmp` and `ACK.tmp`. Recovery removes these, and only these (another
/// process's temporary files in the directory are not recovery's to remove).
pub fn is_own_tmp_name(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .is_some_and(|stem| stem == ACK_FILE || parse_segment_file_name(stem).is_some())
}

/// The temporary file a replayer in process `pid` writes `replay.json` through.
pub fn replay_tmp_name(pid: u32) -> String {
    format!("{REPLAY_STATE_FILE}.{pid}{TMP_SUFFIX}")
}

/// True for a name made by [`replay_tmp_name`].
pub fn is_replay_tmp_name(name: &str) -> bool {
    name.strip_prefix(REPLAY_STATE_FILE)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(TMP_SUFFIX))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// File name of segment `seq`: 16 zero-padded decimal digits and `.sjl`, so that names sort
/// like sequence numbers.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016}.{SEGMENT_EXTENSION}")
}

/// The sequence number encoded in a segment file name, if `name` is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sjl")?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// How [`open_journal_file`] opens a file of a journal directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet (`O_EXCL`).
    CreateNew,
    /// Read and write; created if missing, never truncated.
    OpenOrCreate,
}

/// Opens a file of a journal directory without trusting what the directory holds: never
/// through a symbolic link (`O_NOFOLLOW`: a link planted in the directory would make a
/// privileged process read or overwrite the file it points to), never blocking on a FIFO or a
/// device (`O_NONBLOCK`, then the type is checked on the open descriptor), only a regular
/// file, and, when opened for writing, only a file with a single link (a hard link to another
/// file would make us write that file).
///
/// # Errors
///
/// [`JournalError::UnsafeFile`] for a symbolic link, a file that is not regular, or a writable file
/// with several links; [`JournalError::Io`] otherwise (`NotFound` included: callers match on it).
pub(crate) fn open_journal_file(path: &Path, access: Access, what: &'static str) -> Result<File> {
    use rustix::fs::OFlags;
    let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32;
    let mut o = OpenOptions::new();
    o.read(true).custom_flags(flags);
    match access {
        Access::Read => {}
        Access::ReadWrite => {
            o.write(true);
        }
        Access::CreateNew => {
            o.write(true).create_new(true);
        }
        Access::OpenOrCreate => {
            o.write(true).create(true);
        }
    }
    let file = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return Error::Journal(JournalError::UnsafeFile {
                path: path.to_path_buf(),
                reason: "is a symbolic link".into(),
            });
        }
        // A socket fails with ENXIO, a directory opened for writing with EISDIR: name what is
        // there rather than the errno.
        match fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_file() => Error::Journal(JournalError::UnsafeFile {
                path: path.to_path_buf(),
                reason: format!("is {}, not a regular file", file_type_name(&m.file_type())),
            }),
            _ => Error::io(what, path, e),
        }
    })?;
    let meta = file.metadata().map_err(|e| Error::io(what, path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::Journal(JournalError::UnsafeFile {
            path: path.to_path_buf(),
            reason: format!(
                "is {}, not a regular file",
                file_type_name(&meta.file_type())
            ),
        }));
    }
    if access != Access::Read && meta.nlink() > 1 {
        return Err(Error::Journal(JournalError::UnsafeFile {
            path: path.to_path_buf(),
            reason: format!(
                "has {} hard links (syncjournal never writes a file that is also elsewhere)",
                meta.nlink()
            ),
        }));
    }
    Ok(file)
}

/// A file type in words, for error messages.
pub(crate) fn file_type_name(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Calls the fault injector, if any.
pub(crate) fn inject(faults: Option<&dyn FaultInjector>, op: IoOp, path: &Path) -> io::Result<()> {
    match faults {
        Some(f) => f.check(op, path),
        None => Ok(()),
    }
}

/// `fsync` of a directory, so that file creations, renames and removals in it are durable.
/// (`msync`/`fdatasync` of a file never covers its directory entry.)
pub(crate) fn sync_dir(dir: &Path, faults: Option<&dyn FaultInjector>) -> Result<()> {
    inject(faults, IoOp::SyncDir, dir).map_err(|e| Error::io("fsync directory", dir, e))?;
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Reserves `[0, len)` of `file` with real blocks. Uses `fallocate`; where the file system
/// does not support it, writes zeros in 4 KiB pieces (never `set_len`, which would leave a
/// sparse file whose first store through a map could raise `SIGBUS` on a full disk; 4 KiB
/// pieces keep the page cache in small pages, see `../shared/baseline/README.md`).
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            let zeros = [0u8; 4096];
            let current = file.metadata()?.len();
            let mut at = 0;
            while at < len {
                let n = (len - at).min(zeros.len() as u64) as usize;
                if at >= current || !is_zero_at(file, at, n)? {
                    file.write_all_at(&zeros[..n], at)?;
                }
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn is_zero_at(file: &File, at: u64, n: usize) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    file.read_exact_at(&mut buf[..n], at)?;
    Ok(buf[..n].iter().all(|&b| b == 0))
}

/// Creates segment file `seq` in `dir` with `header`, reserved to `header.segment_bytes`, and
/// makes it durable: written under a temporary name, synced, renamed into place, and the
/// directory synced. A crash at any point leaves either no segment or a complete one (plus,
/// perhaps, a `.tmp` file that the next open removes).
pub(crate) fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    faults: Option<&dyn FaultInjector>,
) -> Result<(PathBuf, File)> {
    let name = segment_file_name(header.segment_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let file = open_journal_file(&tmp, Access::CreateNew, "create segment")?;
        inject(faults, IoOp::Allocate, &tmp)
            .and_then(|()| allocate(&file, header.segment_bytes))
            .map_err(|e| {
                if is_disk_full(&e) {
                    Error::Journal(JournalError::DiskFull {
                        op: "reserving a new segment",
                        path: tmp.clone(),
                        bytes: header.segment_bytes,
                        source: e,
                    })
                } else {
                    Error::io("allocate segment", &tmp, e)
                }
            })?;
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io("write segment header", &tmp, e))?;
        inject(faults, IoOp::SyncData, &tmp)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("fsync new segment", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename new segment", &path, e))?;
        Ok(file)
    })();
    match result {
        Ok(file) => {
            sync_dir(dir, faults)?;
            Ok((path, file))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Opens an existing segment file for reading and writing.
pub(crate) fn open_segment_rw(path: &Path) -> Result<File> {
    open_journal_file(path, Access::ReadWrite, "open segment")
}

/// The exclusive lock on a journal directory, held for the life of a `Journal`.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    /// Identity of the lock file in [`HELD_IN_THIS_PROCESS`].
    key: (u64, u64),
}

/// How long `open` waits when the lock is held by a `fork` of this process that has not
/// `exec`'d yet (see [`DirLock::acquire`]). Such a hold lasts microseconds to milliseconds.
pub(crate) const FORK_HANDOVER_WAIT_MS: u64 = 2_000;

/// Lock files (device, inode) held by a `DirLock` of this process. Tells "this process has
/// the journal open" (refused at once) from "a forked child of this process still shares the
/// lock's open file description" (transient: waited out).
static HELD_IN_THIS_PROCESS: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

fn held_in_this_process() -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    HELD_IN_THIS_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Runs before the file (and with it the flock) is closed; an opener that sees the
        // lock still held in that instant waits it out as a hand-over.
        held_in_this_process().retain(|k| *k != self.key);
    }
}

impl DirLock {
    /// Takes the lock on `dir` (creating `dir/LOCK`), waiting up to `wait` for a holder to
    /// release it, or fails with [`JournalError::Locked`].
    ///
    /// An `flock` belongs to an open file description, which a `fork`ed child shares until
    /// it `exec`s: a process that forks (e.g. spawns a command) while a journal is open keeps
    /// the lock held for a moment after the journal is closed. When the lock file names this
    /// process as the holder but no `DirLock` of this process holds it, the holder is such a
    /// child, and `acquire` waits up to [`FORK_HANDOVER_WAIT_MS`] whatever `wait` says. A
    /// second open in the same process is refused at once.
    pub(crate) fn acquire(dir: &Path, wait: std::time::Duration) -> Result<DirLock> {
        let start = std::time::Instant::now();
        let fork_wait = std::time::Duration::from_millis(FORK_HANDOVER_WAIT_MS);
        loop {
            match Self::try_acquire(dir) {
                Err(Error::Journal(JournalError::Locked { holder_pid, dir })) => {
                    let handover = holder_pid == Some(std::process::id()) && !Self::held_here(&dir);
                    let limit = if handover { wait.max(fork_wait) } else { wait };
                    if start.elapsed() >= limit {
                        return Err(Error::Journal(JournalError::Locked { holder_pid, dir }));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// True if a `DirLock` of this process holds `dir`'s lock file.
    fn held_here(dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(dir.join(LOCK_FILE)) {
            Ok(m) => held_in_this_process().contains(&(m.dev(), m.ino())),
            // Cannot tell: do not wait for a hand-over that may not be one.
            Err(_) => true,
        }
    }

    fn try_acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = open_journal_file(&path, Access::OpenOrCreate, "open lock file")?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Journal(JournalError::Locked {
                    dir: dir.to_path_buf(),
                    holder_pid: text.trim().parse().ok(),
                }));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat lock file", &path, e))?;
        let key = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        // Informational only: the pid of the holder, for the `Locked` message of others.
        let _ = file.set_len(0);
        let _ = file.write_all_at(std::process::id().to_string().as_bytes(), 0);
        let _ = file.flush();
        held_in_this_process().push(key);
        Ok(DirLock { _file: file, key })
    }

    /// True if some process holds the lock on `dir` right now (without taking it for long).
    pub(crate) fn is_held(dir: &Path) -> Result<Option<Option<u32>>> {
        let path = dir.join(LOCK_FILE);
        let mut file = match open_journal_file(&path, Access::Read, "open lock file") {
            Ok(f) => f,
            Err(Error::Journal(JournalError::Io { source, .. }))
                if source.kind() == io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(None)
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Ok(Some(text.trim().parse().ok()))
            }
            Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_numbers_and_parse_back() {
        assert_eq!(segment_file_name(42), "0000000000000042.sjl");
        assert_eq!(parse_segment_file_name("0000000000000042.sjl"), Some(42));
        assert_eq!(parse_segment_file_name("42.sjl"), None);
        assert_eq!(parse_segment_file_name("0000000000000042.sjl.tmp"), None);
        assert_eq!(parse_segment_file_name("00000000000000x2.sjl"), None);
        assert_eq!(
            parse_segment_file_name(&segment_file_name(SEGMENT_SEQ_MAX)),
            Some(SEGMENT_SEQ_MAX)
        );
        let mut names: Vec<String> = [10u64, 9, 100]
            .iter()
            .map(|&s| segment_file_name(s))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                segment_file_name(9),
                segment_file_name(10),
                segment_file_name(100)
            ]
        );
    }

    #[test]
    fn allocation_is_not_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("a")).unwrap();
        allocate(&f, 1 << 20).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 >= 1 << 20, "blocks {}", m.blocks());
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
        match DirLock::acquire(dir.path(), std::time::Duration::from_millis(30)) {
            Err(Error::Journal(JournalError::Locked { holder_pid, .. })) => {
                assert_eq!(holder_pid, Some(std::process::id()))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            DirLock::is_held(dir.path()).unwrap(),
            Some(Some(std::process::id()))
        );
    }

    #[test]
    fn the_fork_hand_over_wait_is_what_the_format_document_says() {
        let doc = include_str!("../../journal-format.md");
        assert_eq!(FORK_HANDOVER_WAIT_MS, 2_000);
        assert!(doc.contains("waits\n  up to 2 s for such a child"));
    }

    #[test]
    fn a_second_open_in_this_process_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(
            DirLock::acquire(dir.path(), std::time::Duration::ZERO),
            Err(Error::Journal(JournalError::Locked { .. }))
        ));
        assert!(t.elapsed() < std::time::Duration::from_millis(FORK_HANDOVER_WAIT_MS / 2));
    }

    #[test]
    fn a_lock_kept_by_a_forked_child_is_waited_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
        // A child that shares the lock's open file description for a while, as a child
        // forked in another thread shares it until its exec: here as its stdin.
        let shared = held._file.try_clone().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .stdin(shared)
            .spawn()
            .unwrap();
        drop(held);
        let t = std::time::Instant::now();
        let lock = DirLock::acquire(dir.path(), std::time::Duration::ZERO);
        let waited = t.elapsed();
        child.wait().unwrap();
        lock.expect("the child's hold is transient; open waits for it");
        assert!(
            waited >= std::time::Duration::from_millis(100),
            "{waited:?}"
        );
    }
}
