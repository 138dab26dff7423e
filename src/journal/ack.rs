//! The acknowledgement file `ACK`: the durable record of how far the journal has been applied
//! downstream. Two checksummed slots written alternately (see `format::ack`), so each update
//! is one `pwrite` and one `fdatasync`, and a torn update leaves the previous value readable.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::error::{DamageKind, Error, Result};
use crate::fault::{FaultInjector, IoOp};
use crate::format::Lsn;
use crate::format::{ACK_FILE_BYTES, AckSlot, decode_ack_file};
use crate::segment::{ACK_FILE, Access, inject, open_journal_file, sync_dir};

/// The open acknowledgement file.
#[derive(Debug)]
pub(crate) struct AckFile {
    path: PathBuf,
    file: File,
    current: AckSlot,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl AckFile {
    /// Creates the file for a new journal (acknowledged LSN 0), durably.
    pub(crate) fn create(
        dir: &Path,
        journal_id: Uuid,
        acked_lsn: Lsn,
        faults: Option<&dyn FaultInjector>,
    ) -> Result<AckFile> {
        let path = dir.join(ACK_FILE);
        let tmp = dir.join(format!("{ACK_FILE}.tmp"));
        let slot = AckSlot {
            journal_id,
            generation: 1,
            acked_lsn,
            acked_at_ms: now_ms(),
        };
        let mut bytes = vec![0u8; ACK_FILE_BYTES];
        bytes[slot.offset()..slot.offset() + 64].copy_from_slice(&slot.encode());
        // A leftover temporary file (or anything planted under its name) is removed, never
        // followed: the new one is created exclusively.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove leftover acknowledgement file", &tmp, e)),
        }
        let file = open_journal_file(&tmp, Access::CreateNew, "create acknowledgement file")?;
        file.write_all_at(&bytes, 0)
            .map_err(|e| Error::io("write acknowledgement file", &tmp, e))?;
        inject(faults, IoOp::WriteAck, &tmp)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("fsync acknowledgement file", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename acknowledgement file", &path, e))?;
        sync_dir(dir, faults)?;
        Ok(AckFile {
            path,
            file,
            current: slot,
        })
    }

    /// Opens the file of an existing journal. `Ok(None)` if it does not exist.
    pub(crate) fn open(dir: &Path) -> Result<Option<AckFile>> {
        let path = dir.join(ACK_FILE);
        if !exists(&path)? {
            return Ok(None);
        }
        let file = open_journal_file(&path, Access::ReadWrite, "open acknowledgement file")?;
        let current = read_slot(&file, &path)?;
        Ok(Some(AckFile {
            path,
            file,
            current,
        }))
    }

    /// Reads the current slot of `dir/ACK` without opening it for writing.
    pub(crate) fn peek(dir: &Path) -> Result<Option<AckSlot>> {
        let path = dir.join(ACK_FILE);
        if !exists(&path)? {
            return Ok(None);
        }
        // Checked as every journal file is: never a FIFO (which would block), a directory, a
        // socket or a symbolic link.
        let f = open_journal_file(&path, Access::Read, "open acknowledgement file")?;
        read_slot(&f, &path).map(Some)
    }

    /// The current slot.
    pub(crate) fn current(&self) -> AckSlot {
        self.current
    }

    /// Durably records `acked_lsn`: writes the older slot, then `fdatasync`.
    pub(crate) fn write(
        &mut self,
        acked_lsn: Lsn,
        faults: Option<&dyn FaultInjector>,
    ) -> Result<()> {
        let slot = AckSlot {
            journal_id: self.current.journal_id,
            generation: self.current.generation + 1,
            acked_lsn,
            acked_at_ms: now_ms(),
        };
        self.file
            .write_all_at(&slot.encode(), slot.offset() as u64)
            .map_err(|e| Error::io("write acknowledgement", &self.path, e))?;
        inject(faults, IoOp::WriteAck, &self.path)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io_unmapped("fdatasync acknowledgement", &self.path, e))?;
        self.current = slot;
        Ok(())
    }
}

fn read_slot(file: &File, path: &Path) -> Result<AckSlot> {
    let mut bytes = vec![0u8; ACK_FILE_BYTES];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read acknowledgement file", path, e)),
        }
    }
    bytes.truncate(filled);
    decode_ack_file(&bytes).map_err(|_| Error::corrupt(path, 0, DamageKind::AckFile))
}

/// True if something (of any type) is at `path`, without following a symbolic link.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("open acknowledgement file", path, e)),
    }
}
