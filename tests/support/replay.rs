//! Replay rigs: a journal of counter events, a counter target of a given kind and a scriptable
//! fault injector in one temporary directory ([`Rig`]), and the replay options of the tests.

use std::ops::Range;
use std::sync::Arc;

use syncjournal::replay::TargetFaults;
use syncjournal::{Journal, JournalOptions, Lsn, ReplayOptions, Replayer, TargetOptions};

use super::events::{Bump, COUNTER_SCHEMA, Ledger, assert_target_is_fold};
use super::faults::Faults;
use super::targets::{TargetKind, TestTarget};

/// Replay options for tests: tiny retry delays, no retries unless asked.
pub fn replay_opts() -> ReplayOptions {
    ReplayOptions::new()
        .retry_attempts_max(0)
        .retry_delay_ms(1)
        .retry_delay_max_ms(5)
}

/// A journal of bumps, a counter target and a fault injector, in a temporary directory.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub journal: Arc<Journal>,
    pub target: TestTarget,
    pub faults: Arc<Faults>,
    pub ledger: Ledger,
}

impl Rig {
    /// `entries` bumps in a journal of 64 KiB segments; the target (of `kind`) created with
    /// [`COUNTER_SCHEMA`].
    pub fn new(kind: TargetKind, entries: u64) -> Rig {
        Rig::with_journal(
            kind,
            JournalOptions::new().segment_bytes_max(64 << 10),
            entries,
        )
    }

    /// `entries` bumps in a journal opened with `opts`.
    pub fn with_journal(kind: TargetKind, opts: JournalOptions, entries: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path().join("journal"), opts).unwrap());
        let mut ledger = Ledger::default();
        ledger.append_increments(&journal, entries);
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let target = TestTarget::create(kind, &share, "target.db", COUNTER_SCHEMA);
        Rig {
            dir,
            journal,
            target,
            faults: Arc::new(Faults::new()),
            ledger,
        }
    }

    /// The target's options (1 s busy timeout) with the rig's fault injector.
    pub fn target_opts(&self) -> TargetOptions {
        self.target
            .options()
            .busy_timeout_ms(1000)
            .faults(Arc::clone(&self.faults) as Arc<dyn TargetFaults>)
    }

    /// A replayer to the rig's target, with the rig's fault injector.
    pub fn replayer(&self, opts: ReplayOptions) -> Replayer<Bump> {
        self.replayer_with(self.target_opts(), opts)
    }

    /// A replayer to the rig's target with the given target options.
    pub fn replayer_with(&self, topts: TargetOptions, opts: ReplayOptions) -> Replayer<Bump> {
        Replayer::new(Arc::clone(&self.journal), self.target.spec(), topts, opts)
    }

    /// Appends `n` more bumps.
    pub fn append(&mut self, n: u64) -> Range<Lsn> {
        let j = Arc::clone(&self.journal);
        self.ledger.append_increments(&j, n)
    }

    /// The journal's acknowledged LSN.
    pub fn acked(&self) -> Lsn {
        self.journal.state().acked_lsn
    }

    /// The target is the fold of its prefix up to its watermark, and the acknowledgement is
    /// that watermark. Returns the watermark.
    pub fn check_prefix(&self, what: &str) -> Lsn {
        let w = assert_target_is_fold(&self.target, self.journal.id(), &self.ledger);
        assert_eq!(
            self.acked(),
            w,
            "{what}: acknowledgement = target watermark"
        );
        w
    }

    /// Everything applied exactly once.
    pub fn check_complete(&self, what: &str) {
        let w = self.check_prefix(what);
        assert_eq!(w, self.ledger.head(), "{what}: watermark = last LSN");
    }
}
