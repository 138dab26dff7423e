//! Journal options and the durability and recovery policies.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fault::FaultInjector;
use crate::format::{FRAME_HEADER_BYTES, SEGMENT_DATA_OFFSET, frame_bytes};

/// When an appended record becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistMode {
    /// `append` returns only once the record is on stable storage. Concurrent appenders share
    /// syncs (group commit). The default.
    #[default]
    Sync,
    /// `append` returns once the record is in the page cache; a background thread syncs every
    /// `interval`. A power loss can lose up to `interval` (plus one sync) of records; a process
    /// crash loses nothing.
    Batched {
        /// Time between background syncs.
        interval: Duration,
    },
    /// `append` returns once the record is in the page cache; syncs happen only on
    /// [`crate::Journal::sync`], at segment rotation and on close. A power loss can lose
    /// everything since the last of those; a process crash loses nothing.
    Buffered,
}

/// What [`crate::Journal::open`] does with damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn tail (an incomplete last write): keep its bytes in `forensics/`, zero it,
    /// sync, and report what was cut. Any damage in data that had been durable is an error.
    /// The default.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damage, torn tail included; the error names the segment, offset
    /// and kind.
    AbsoluteConsistency,
    /// Cut a torn tail, and replace each damaged region in the middle with a gap record (its
    /// bytes kept in `forensics/`), reporting every LSN range lost. Readers see the gap.
    Salvage,
}

/// Options for [`crate::Journal::open`]. Every setter documents its default.
#[derive(Clone)]
pub struct JournalOptions {
    pub(crate) persist_mode: PersistMode,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) segment_bytes_max: u64,
    pub(crate) record_bytes_max: usize,
    pub(crate) retain_acked_segments: usize,
    pub(crate) retain_acked_ms: u64,
    pub(crate) retain_acked_bytes: u64,
    pub(crate) create_if_missing: bool,
    pub(crate) keep_cut_bytes: bool,
    pub(crate) release_read_bytes: usize,
    pub(crate) lock_wait_ms: u64,
    pub(crate) known_durable_lsn: u64,
    pub(crate) faults: Option<Arc<dyn FaultInjector>>,
}

impl fmt::Debug for JournalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalOptions")
            .field("persist_mode", &self.persist_mode)
            .field("recovery_mode", &self.recovery_mode)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("record_bytes_max", &self.record_bytes_max)
            .field("retain_acked_segments", &self.retain_acked_segments)
            .field("retain_acked_ms", &self.retain_acked_ms)
            .field("retain_acked_bytes", &self.retain_acked_bytes)
            .field("create_if_missing", &self.create_if_missing)
            .field("keep_cut_bytes", &self.keep_cut_bytes)
            .field("release_read_bytes", &self.release_read_bytes)
            .field("lock_wait_ms", &self.lock_wait_ms)
            .field("known_durable_lsn", &self.known_durable_lsn)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            persist_mode: PersistMode::Sync,
            recovery_mode: RecoveryMode::TolerateTornTail,
            segment_bytes_max: Self::SEGMENT_BYTES_DEFAULT,
            record_bytes_max: Self::RECORD_BYTES_DEFAULT,
            retain_acked_segments: 0,
            retain_acked_ms: Self::RETAIN_ACKED_MS_DEFAULT,
            retain_acked_bytes: Self::RETAIN_ACKED_BYTES_DEFAULT,
            create_if_missing: true,
            keep_cut_bytes: true,
            release_read_bytes: 8 << 20,
            lock_wait_ms: 0,
            known_durable_lsn: 0,
            faults: None,
        }
    }
}

impl JournalOptions {
    /// Default segment size: 64 MiB.
    pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
    /// Smallest segment size: 64 KiB ([`crate::format::SEGMENT_BYTES_MIN`]).
    pub const SEGMENT_BYTES_MIN: u64 = crate::format::SEGMENT_BYTES_MIN;
    /// Largest segment size: 1 GiB ([`crate::format::SEGMENT_BYTES_MAX`]).
    pub const SEGMENT_BYTES_MAX: u64 = crate::format::SEGMENT_BYTES_MAX;
    /// How long acknowledged segments are kept by default: 1 hour.
    pub const RETAIN_ACKED_MS_DEFAULT: u64 = 3_600_000;
    /// How many bytes of acknowledged segments are kept at most by default: 256 MiB.
    pub const RETAIN_ACKED_BYTES_DEFAULT: u64 = 256 << 20;
    /// Default largest payload: 16 MiB.
    pub const RECORD_BYTES_DEFAULT: usize = 16 << 20;

    /// Defaults: `PersistMode::Sync`, `RecoveryMode::TolerateTornTail`, 64 MiB segments,
    /// 16 MiB records, acknowledged segments kept for an hour (256 MiB at most), create the
    /// directory if missing, keep cut bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// When appends become durable. Default: [`PersistMode::Sync`].
    pub fn persist_mode(mut self, mode: PersistMode) -> Self {
        self.persist_mode = mode;
        self
    }

    /// What `open` does with damage. Default: [`RecoveryMode::TolerateTornTail`].
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Size of each segment file, preallocated when the segment is created; a multiple of
    /// 4096 between 64 KiB and 1 GiB. Applies to segments created from now on. Default: 64 MiB.
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// Largest payload accepted by `append`; at most what fits in one segment. Default: 16 MiB.
    pub fn record_bytes_max(mut self, bytes: usize) -> Self {
        self.record_bytes_max = bytes;
        self
    }

    /// How many fully acknowledged segments to keep in any case (the newest ones), so that a
    /// target restored from a backup can be replayed again. Default: 0.
    pub fn retain_acked_segments(mut self, segments: usize) -> Self {
        self.retain_acked_segments = segments;
        self
    }

    /// How long a segment is kept after all its records were acknowledged (as seen by the
    /// process that has the journal open: a reopen starts the time again), so that a sync to
    /// the wrong database, or a target restored from a recent backup, can still be repaired
    /// from the journal. 0 removes segments as soon as they are acknowledged (and beyond
    /// `retain_acked_segments`). Default: 3 600 000 ms (1 hour).
    pub fn retain_acked_ms(mut self, ms: u64) -> Self {
        self.retain_acked_ms = ms;
        self
    }

    /// The most bytes of acknowledged segments kept for `retain_acked_ms`: beyond it, the
    /// oldest are removed earlier (the disk budget wins over the time). Default: 256 MiB.
    pub fn retain_acked_bytes(mut self, bytes: u64) -> Self {
        self.retain_acked_bytes = bytes;
        self
    }

    /// Create a new journal if there is none: if the directory does not exist, or holds no
    /// journal (no segment, no `ACK`). When off, `open` fails with `NotFound` or `NoJournal`.
    /// Default: true.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Before recovery cuts or replaces damaged bytes, copy them to
    /// `forensics/<segment>-<offset>.cut` in the journal directory. Default: true.
    pub fn keep_cut_bytes(mut self, keep: bool) -> Self {
        self.keep_cut_bytes = keep;
        self
    }

    /// Readers drop the page mappings of data they have read every this many bytes, which
    /// keeps resident memory flat however long the journal (0: never). Default: 8 MiB.
    pub fn release_read_bytes(mut self, bytes: usize) -> Self {
        self.release_read_bytes = bytes;
        self
    }

    /// How long `open` waits for another holder of the journal's lock to release it before
    /// failing with `Locked` (for hand-overs between processes, e.g. a restart). Default: 0
    /// (fail at once). Whatever this says, a lock kept only by a `fork`ed child of this
    /// process that has not `exec`'d yet is waited out for up to 2 s.
    pub fn lock_wait_ms(mut self, ms: u64) -> Self {
        self.lock_wait_ms = ms;
        self
    }

    /// Evidence from outside the journal that every record up to `lsn` was durable — the
    /// target's watermark, typically (only durable records ever reach a target; the store
    /// passes it when it can read it). Recovery never cuts such a record as a torn tail, and a
    /// journal whose records end before `lsn` is damaged (records were lost), never a place
    /// where new appends reuse LSNs the target has seen. The journal's own proofs (`ACK`, the
    /// owner's `HEAD`) are always used. Default: 0 (none).
    pub fn known_durable_lsn(mut self, lsn: u64) -> Self {
        self.known_durable_lsn = lsn;
        self
    }

    /// Test seam (feature `fault-injection`): an injector that can make chosen I/O operations
    /// fail. Default: none.
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The largest payload that fits in one segment of the configured size.
    pub fn payload_bytes_limit(&self) -> usize {
        let per_segment = (self.segment_bytes_max as usize)
            .saturating_sub(SEGMENT_DATA_OFFSET + FRAME_HEADER_BYTES)
            & !7;
        per_segment.min(self.record_bytes_max)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let s = self.segment_bytes_max;
        if !(Self::SEGMENT_BYTES_MIN..=Self::SEGMENT_BYTES_MAX).contains(&s)
            || !s.is_multiple_of(4096)
        {
            return Err(Error::InvalidOption {
                name: "segment_bytes_max",
                reason: format!(
                    "{s} is not a multiple of 4096 between {} and {}",
                    Self::SEGMENT_BYTES_MIN,
                    Self::SEGMENT_BYTES_MAX
                ),
            });
        }
        if self.known_durable_lsn > crate::format::LSN_MAX {
            return Err(Error::InvalidOption {
                name: "known_durable_lsn",
                reason: format!(
                    "{} is beyond the largest LSN {}",
                    self.known_durable_lsn,
                    crate::format::LSN_MAX
                ),
            });
        }
        if self.record_bytes_max == 0 {
            return Err(Error::InvalidOption {
                name: "record_bytes_max",
                reason: "must be at least 1".into(),
            });
        }
        if let PersistMode::Batched { interval } = self.persist_mode
            && interval.is_zero()
        {
            return Err(Error::InvalidOption {
                name: "persist_mode",
                reason: "Batched interval must be positive".into(),
            });
        }
        debug_assert!(frame_bytes(self.payload_bytes_limit()) <= s as usize);
        Ok(())
    }
}
