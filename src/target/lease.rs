//! The writer lease of an SQLite target on a share that does not forward byte-range locks
//! (sshfs, smbnetfs, NFS without lockd): one machine at a time touches the database file,
//! built only on what such shares provide — an exclusive create and an atomic rename on the
//! server — with expiry judged by each machine's own clock (`CLOCK_BOOTTIME`: monotonic, and
//! counting a suspend), so no clock agreement is needed. The protocol and its assumptions are
//! in `sync-protocol.md` ("Writer lease").
//!
//! The lease is the file `<target>-sjlease` beside the database: a fixed-size text record
//! naming its holder (a nonce per lease object, host, pid, journal) and a renewal counter.
//! * Acquire: create the file exclusively (`O_CREAT|O_EXCL`) with our record.
//! * Renew (every third of the lease, while it is ours): check the record is still ours, then
//!   write a new record (counter + 1) to a temporary file of our own and rename it over.
//! * Release: check the record is ours, remove the file.
//! * Take over: a record seen unchanged for `lease · (1 + drift) + margin` of our own clock
//!   belongs to a holder whose lease has expired by its own clock. Our record is written over
//!   it in place (so that the holder's handle on its record sees it), then renamed over it,
//!   *fenced*: we renew it but do not touch the database until the replaced holder's lease
//!   could have run out by then too, and only if the record is still ours.
//! * Check after commit: one uncached read (`O_DIRECT`) through a handle on our own record,
//!   opened when it was written: one round trip on a share.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::journal::ack::now_ms;

/// The lease file's name beside the target: `<target file name>` + this.
pub const LEASE_SUFFIX: &str = "-sjlease";
/// The first line of every lease record.
pub const LEASE_MAGIC: &str = "syncjournal-lease 1";
/// The size every lease record is padded to (one write, one read).
pub const LEASE_RECORD_BYTES: usize = 512;
/// The most of a lease file that is read (a larger one is not a lease record).
const LEASE_READ_MAX: u64 = 4096;
/// How much faster than ours another machine's clock may run, in percent.
pub const LEASE_DRIFT_PERCENT: u64 = 5;
/// The margin added to every judgement of expiry, and the most a holder's file operation
/// may take to land after it began: the bounded-delay assumption.
pub const LEASE_MARGIN_MS: u64 = 1_000;

/// The file-system calls on the share that the writer leases of this process made: on the
/// threads that use the target (index 0) and on the renewal threads (index 1). Each is at most
/// one request to the share's server; counted so that a test can measure what the lease
/// adds per batch ([`lease_file_calls`]).
static FILE_CALLS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

std::thread_local! {
    /// True on a lease's renewal thread.
    static RENEWAL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts `n` file-system calls on the share (see [`FILE_CALLS`]).
fn calls(n: u64) {
    let i = usize::from(RENEWAL_THREAD.with(|c| c.get()));
    FILE_CALLS[i].fetch_add(n, Ordering::Relaxed);
}

/// The file-system calls on the share (open, stat, read, write, fsync, rename, remove, list)
/// that the writer leases of this process have made so far: `(on the threads that use the
/// target, on the lease's renewal threads)`. Each is at most one request to the share's
/// server. For measurements (the lease's cost per batch); not a stable interface.
#[cfg(feature = "fault-injection")]
pub fn lease_file_calls() -> (u64, u64) {
    (
        FILE_CALLS[0].load(Ordering::Relaxed),
        FILE_CALLS[1].load(Ordering::Relaxed),
    )
}

/// A reader that counts its read calls (see [`calls`]).
struct Counted<R>(R);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        calls(1);
        self.0.read(buf)
    }
}

/// A moment on this machine's boot clock (monotonic; counts a suspend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Moment(Duration);

impl Moment {
    fn now() -> Moment {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Moment(Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec as u32))
    }

    fn since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// Who holds a lease, as its record says (for status and messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's nonce (one per lease object: a process may hold several over time).
    pub holder: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The journal it replays, if it named one.
    pub journal: Option<String>,
    /// When it took the lease, by its wall clock (informational: never used to judge expiry).
    pub since_unix_ms: u64,
    /// The lease duration it promised to renew within.
    pub lease_ms: u64,
    /// Its renewal counter.
    pub counter: u64,
    /// Its machine's boot id and pid namespace (`/proc/sys/kernel/random/boot_id`,
    /// `/proc/self/ns/pid`), if it wrote them: a holder of this very boot and namespace whose
    /// pid is gone is known to be dead.
    pub boot: Option<String>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} pid {}", self.host, self.pid)?;
        if let Some(j) = &self.journal {
            write!(f, " journal {j}")?;
        }
        write!(f, " since {} (unix ms)", self.since_unix_ms)
    }
}

/// What went wrong with the lease.
#[derive(Debug)]
pub(crate) enum LeaseError {
    /// Another holder has it (or is taking it over) and did not let go within the wait.
    Held {
        holder: Option<Box<LeaseHolder>>,
        waited_ms: u64,
    },
    /// It was ours and is not any more (taken over, removed), or it ran out before it could be
    /// renewed: nothing more may be written under it.
    Lost(String),
    /// The lease file is not a lease file (a link, a directory, a foreign file).
    Hostile(String),
    /// The share failed an operation on the lease file.
    Io(String, std::io::Error),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Held { holder, waited_ms } => match holder {
                Some(h) => write!(f, "the writer lease is held by {h}; waited {waited_ms} ms"),
                None => write!(
                    f,
                    "the writer lease is being taken or written by another machine; waited {waited_ms} ms"
                ),
            },
            LeaseError::Lost(why) => write!(f, "the writer lease was lost: {why}"),
            LeaseError::Hostile(why) => write!(f, "the lease file is unusable: {why}"),
            LeaseError::Io(what, e) => write!(f, "{what} the lease file: {e}"),
        }
    }
}

/// What the lease file held when read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Absent,
    /// The raw bytes (compared to tell a renewal), and the record if it parses.
    Present(Vec<u8>, Option<LeaseHolder>),
}

#[derive(Debug)]
struct Held {
    /// When the last write of our record that landed began: the lease runs from there.
    renewed: Moment,
    counter: u64,
    since_unix_ms: u64,
    /// Taken over from a holder that may not have stopped yet: no database access before.
    fenced_until: Option<Moment>,
}

/// The lease's state and protocol steps (behind [`Lease`]'s mutex).
#[derive(Debug)]
struct LeaseState {
    path: PathBuf,
    nonce: String,
    journal: Option<Uuid>,
    lease: Duration,
    wait: Duration,
    held: Option<Held>,
    /// The record seen last while waiting, and since when it has not changed.
    watching: Option<(Seen, Moment)>,
    /// How many times the lease was taken (created or taken over; renewals do not count):
    /// what the target's connection is reopened by, since another holder may have written
    /// the file in between (`sync-protocol.md` §1.3).
    tenure: u64,
    /// An uncached (`O_DIRECT`) read handle on our own record, opened after each write of
    /// it: the check after a commit reads through it, one request (`None`: the file system
    /// has no uncached reads, or the record was not written yet; the check reads by name).
    check: Option<File>,
    /// Whether to remove other holders' temporary files once this lease is first usable, and
    /// whether that was done (see `LeaseState::sweep_tmp_files`).
    sweep: bool,
    swept: bool,
    /// A renewal thread runs for this lease (see `LeaseState::renew_if_due`).
    renewer: bool,
}

/// The lease file of the SQLite target at `target`.
pub fn lease_path(target: &Path) -> PathBuf {
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(LEASE_SUFFIX);
    target.with_file_name(name)
}

/// Reads who holds the lease of the target at `target`, without taking it: `Ok(None)` if
/// nobody does (or a holder is mid-write of a new record).
pub fn lease_holder(target: &Path) -> std::io::Result<Option<LeaseHolder>> {
    match read(&lease_path(target)) {
        Ok(Seen::Absent) => Ok(None),
        Ok(Seen::Present(_, h)) => Ok(h),
        Err(LeaseError::Io(_, e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

impl LeaseState {
    /// A lease (not taken yet) on the target file `target`, of `lease_ms`, waiting at most
    /// `wait_ms` for another holder.
    fn new(target: &Path, journal: Option<Uuid>, lease_ms: u64, wait_ms: u64) -> LeaseState {
        LeaseState {
            path: lease_path(target),
            nonce: Uuid::new_v4().to_string(),
            journal,
            lease: Duration::from_millis(lease_ms.max(3 * LEASE_MARGIN_MS)),
            wait: Duration::from_millis(wait_ms),
            held: None,
            watching: None,
            tenure: 0,
            check: None,
            sweep: false,
            swept: false,
            renewer: false,
        }
    }

    fn margin() -> Duration {
        Duration::from_millis(LEASE_MARGIN_MS)
    }

    /// How long a record must stay unchanged before its holder's lease (`lease`) has run out
    /// by its own clock, judged by ours.
    fn expiry_after(lease: Duration) -> Duration {
        lease * (100 + LEASE_DRIFT_PERCENT as u32) / 100 + Self::margin()
    }

    /// Names the journal this lease is taken for (shown to other machines from the next
    /// record written).
    pub(crate) fn name_journal(&mut self, journal: Uuid) {
        self.journal = Some(journal);
    }

    /// True if the lease is ours and usable now (not fenced, not about to run out).
    pub(crate) fn is_usable(&self) -> bool {
        self.held.as_ref().is_some_and(|h| {
            let now = Moment::now();
            h.fenced_until.is_none_or(|f| now >= f)
                && now.since(h.renewed) + Self::margin() < self.lease
        })
    }

    /// Takes the lease (or keeps it, renewing it when due), waiting for another holder to
    /// release it or for its lease to expire, up to the wait.
    pub(crate) fn acquire(&mut self) -> Result<(), LeaseError> {
        let started = Moment::now();
        loop {
            if self.held.is_some() {
                self.renew_if_due()?;
                let h = self.held.as_ref().expect("held");
                match h.fenced_until {
                    Some(f) if Moment::now() < f => {}
                    Some(_) => {
                        // The fence is over: the replaced holder has stopped by now. Ours only
                        // if the record still is (two takers: the last rename wins).
                        self.check_ours()?;
                        if let Some(h) = self.held.as_mut() {
                            h.fenced_until = None;
                        }
                        tracing::info!(lease = %self.path.display(), "writer lease taken over");
                        self.sweep_tmp_files();
                        return Ok(());
                    }
                    None => {
                        self.sweep_tmp_files();
                        return Ok(());
                    }
                }
            } else {
                match read(&self.path)? {
                    Seen::Absent => {
                        if self.create()? {
                            self.watching = None;
                            self.sweep_tmp_files();
                            return Ok(());
                        }
                    }
                    seen => {
                        self.watch(seen)?;
                        if self.held.is_some() {
                            // Taken over: fenced, or usable at once (a dead local holder).
                            continue;
                        }
                    }
                }
            }
            let waited = Moment::now().since(started);
            if waited >= self.wait {
                let holder = match read(&self.path) {
                    Ok(Seen::Present(_, h)) => h.map(Box::new),
                    _ => None,
                };
                // Still fenced, the record is kept: the next call goes on waiting the fence out
                // (removing it would let anyone create a fresh lease at once).
                return Err(LeaseError::Held {
                    holder,
                    waited_ms: waited.as_millis() as u64,
                });
            }
            std::thread::sleep(self.poll());
        }
    }

    /// Removes the temporary files other holders left beside the lease file when they crashed
    /// between writing a record and renaming it (`<lease file>.<holder>.tmp`, a regular file
    /// and a holder id that is a UUID, not ours): once per lease object, when it is first
    /// usable (while it is, no other holder writes one), and only if asked (the replayer's
    /// lease, not a read's: listing a share's directory costs).
    fn sweep_tmp_files(&mut self) {
        if !self.sweep || self.swept {
            return;
        }
        self.swept = true;
        let (Some(dir), Some(name)) = (
            self.path.parent(),
            self.path.file_name().and_then(|n| n.to_str()),
        ) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        calls(1);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{name}.");
        for e in entries.flatten() {
            let file_name = e.file_name();
            let Some(holder) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|r| r.strip_suffix(".tmp"))
            else {
                continue;
            };
            // `file_type` does not follow a link: only a regular file is removed.
            if holder == self.nonce
                || Uuid::parse_str(holder).is_err()
                || !e.file_type().is_ok_and(|t| t.is_file())
            {
                continue;
            }
            calls(1);
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "removed a crashed lease holder's temporary file")
                }
                Err(err) => {
                    tracing::debug!(file = %e.path().display(), error = %err, "could not remove a lease holder's temporary file")
                }
            }
        }
    }

    fn poll(&self) -> Duration {
        (self.lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(250))
    }

    /// Notes the record `seen` of another holder; takes it over once it has been unchanged
    /// for longer than its lease can last.
    fn watch(&mut self, seen: Seen) -> Result<(), LeaseError> {
        let now = Moment::now();
        // A holder of this very boot and pid namespace whose process is gone is dead: no need
        // to wait for its lease to run out (nor to see its record twice): its writes went
        // through this machine's own cache. It is taken over at once, under a local lock.
        let here = this_boot();
        let dead_here = here != "-"
            && matches!(&seen, Seen::Present(_, Some(h)) if h.boot.as_deref() == Some(here.as_str())
            && h.pid != std::process::id()
            && !Path::new(&format!("/proc/{}", h.pid)).exists());
        // Our own record, from before our lease lapsed (a cut link): nobody else took it. A
        // machine about to take it over is fenced for longer than our renewal thread takes to
        // see its record and stop us.
        let ours = matches!(&seen, Seen::Present(_, Some(h)) if h.holder == self.nonce);
        if dead_here || ours {
            // Processes of this machine take a dead local holder's place one at a time (a
            // lock of this machine's own: the share's locks are not needed), and the record is
            // read again under it: a second taker finds the first one's live record.
            let _local = local_lock(&self.path)?;
            if read(&self.path)? != seen {
                self.watching = None;
                return Ok(());
            }
            tracing::info!(lease = %self.path.display(), own = ours, "the writer lease's holder is gone (a process of this machine, or this lease before it lapsed); taking it over");
            return self.replace_record(None);
        }
        let since = match &self.watching {
            Some((prev, t)) if *prev == seen => *t,
            _ => {
                self.watching = Some((seen.clone(), now));
                return Ok(());
            }
        };
        let theirs = match &seen {
            Seen::Present(_, Some(h)) => Duration::from_millis(h.lease_ms).max(self.lease),
            _ => self.lease,
        };
        if now.since(since) < Self::expiry_after(theirs) {
            return Ok(());
        }
        let who = match &seen {
            Seen::Present(_, Some(h)) => h.to_string(),
            _ => "an unreadable record".into(),
        };
        tracing::warn!(lease = %self.path.display(), holder = %who, "the writer lease expired (its record did not change for longer than its lease); taking it over");
        self.replace_record(Some(now + Self::expiry_after(theirs)))
    }

    /// Takes the lease over: our record renamed over the one there, fenced until `fence`.
    fn replace_record(&mut self, fence: Option<Moment>) -> Result<(), LeaseError> {
        let begun = Moment::now();
        let since_unix_ms = now_ms();
        self.revoke_in_place(since_unix_ms);
        self.write_replacing(1, since_unix_ms)?;
        self.check = open_check(&self.path);
        self.held = Some(Held {
            renewed: begun,
            counter: 1,
            since_unix_ms,
            fenced_until: fence,
        });
        self.tenure += 1;
        self.watching = None;
        Ok(())
    }

    /// Creates the lease file exclusively with our record: false if another did first.
    fn create(&mut self) -> Result<bool, LeaseError> {
        let begun = Moment::now();
        let since_unix_ms = now_ms();
        calls(1);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(LeaseError::Io("create".into(), e)),
        };
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
        let rec = self.record(1, since_unix_ms);
        calls(3);
        if let Err(e) = f.write_all(&rec).and_then(|()| f.sync_all()) {
            // Ours, half written: remove it rather than leave others a record to wait out.
            calls(1);
            let _ = std::fs::remove_file(&self.path);
            return Err(LeaseError::Io("write".into(), e));
        }
        self.held = Some(Held {
            renewed: begun,
            counter: 1,
            since_unix_ms,
            fenced_until: None,
        });
        self.tenure += 1;
        self.check = open_check(&self.path);
        tracing::debug!(lease = %self.path.display(), "writer lease taken");
        Ok(true)
    }

    /// Renews the lease if a third of it has passed since the last renewal: on the renewal
    /// thread. On the threads that use the target, while a renewal thread runs, only once half
    /// of it has passed (the renewal thread fell behind), so that a renewal's file calls stay
    /// off the batches' path.
    pub(crate) fn renew_if_due(&mut self) -> Result<(), LeaseError> {
        let Some(h) = &self.held else {
            return Err(LeaseError::Lost("not held".into()));
        };
        let now = Moment::now();
        let age = now.since(h.renewed);
        if age + Self::margin() >= self.lease {
            self.held = None;
            return Err(LeaseError::Lost(format!(
                "it ran out before it could be renewed ({} ms since the last renewal, lease {} ms): this process was paused or the share too slow",
                age.as_millis(),
                self.lease.as_millis()
            )));
        }
        let due = if self.renewer && !RENEWAL_THREAD.with(|c| c.get()) {
            self.lease / 2
        } else {
            self.lease / 3
        };
        if age < due {
            return Ok(());
        }
        let (counter, since) = (h.counter + 1, h.since_unix_ms);
        self.check_ours()?;
        let begun = Moment::now();
        match self.write_replacing(counter, since) {
            Ok(()) => {
                if let Some(h) = self.held.as_mut() {
                    h.renewed = begun;
                    h.counter = counter;
                }
                self.check = open_check(&self.path);
                Ok(())
            }
            // Not renewed: the lease still runs from the last renewal; the next call tries
            // again, and the lease is given up once it would run out.
            Err(e) => {
                tracing::warn!(lease = %self.path.display(), error = %e, "could not renew the writer lease");
                Ok(())
            }
        }
    }

    /// Checks, on the share, that the record is ours and the lease has not run out, reading
    /// the lease file by name: before a renewal and before a fenced lease is used.
    pub(crate) fn check_ours(&mut self) -> Result<(), LeaseError> {
        let seen = read(&self.path)?;
        self.judge(&seen)
    }

    /// The check after a commit: [`LeaseState::check_ours`] through the uncached handle on
    /// our record, one read. A takeover writes its record into the file in place before it
    /// renames it over, so the handle sees it. What only a read by name sees (the file
    /// removed by hand, a taker that does not write in place) the renewal's check sees, at
    /// most a third of the lease later. Without a handle, or if reading through it fails,
    /// this reads by name.
    pub(crate) fn check_after_commit(&mut self) -> Result<(), LeaseError> {
        let Some(f) = &self.check else {
            return self.check_ours();
        };
        match read_handle(f, &self.path) {
            Ok(seen) => self.judge(&seen),
            Err(e) => {
                tracing::debug!(lease = %self.path.display(), error = %e, "the check after commit reads the lease file by name");
                self.check = None;
                self.check_ours()
            }
        }
    }

    /// Whether `seen` is our record, and the lease has not run out (if not, it is lost).
    fn judge(&mut self, seen: &Seen) -> Result<(), LeaseError> {
        match seen {
            Seen::Present(_, Some(h)) if h.holder == self.nonce => {}
            other => {
                self.held = None;
                self.check = None;
                return Err(LeaseError::Lost(match other {
                    Seen::Absent => "the lease file was removed".into(),
                    Seen::Present(_, Some(h)) => format!("it is now held by {h}"),
                    Seen::Present(_, None) => "the lease file holds another record".into(),
                }));
            }
        }
        if self
            .held
            .as_ref()
            .is_none_or(|h| Moment::now().since(h.renewed) >= self.lease)
        {
            self.held = None;
            self.check = None;
            return Err(LeaseError::Lost("it ran out".into()));
        }
        Ok(())
    }

    /// Gives the lease up: the file is removed if it is still ours and the lease has not run
    /// out (after that it may be another's, and is not touched). A lease still fenced is not
    /// removed but left to expire: the holder it replaced may not have stopped yet.
    pub(crate) fn release(&mut self) {
        self.check = None;
        let Some(h) = self.held.take() else { return };
        let now = Moment::now();
        if now.since(h.renewed) + Self::margin() >= self.lease
            || h.fenced_until.is_some_and(|f| now < f)
        {
            return;
        }
        match read(&self.path) {
            Ok(Seen::Present(_, Some(r))) if r.holder == self.nonce => {
                calls(1);
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(lease = %self.path.display(), error = %e, "could not remove the writer lease (it expires)");
                } else {
                    tracing::debug!(lease = %self.path.display(), "writer lease released");
                }
            }
            _ => {}
        }
    }

    /// Our record, padded to [`LEASE_RECORD_BYTES`].
    fn record(&self, counter: u64, since_unix_ms: u64) -> Vec<u8> {
        let host = hostname();
        let journal = self
            .journal
            .map(|j| j.to_string())
            .unwrap_or_else(|| "-".into());
        let mut s = format!(
            "{LEASE_MAGIC}\nholder {}\nhost {host}\npid {}\njournal {journal}\ncounter {counter}\nlease_ms {}\nsince_unix_ms {since_unix_ms}\nrenewed_unix_ms {}\nboot {}\n",
            self.nonce,
            std::process::id(),
            self.lease.as_millis(),
            now_ms(),
            this_boot(),
        )
        .into_bytes();
        s.truncate(LEASE_RECORD_BYTES - 1);
        s.resize(LEASE_RECORD_BYTES - 1, b' ');
        s.push(b'\n');
        s
    }

    /// Before a takeover renames our record over the lease file: writes it into the file there
    /// now, in place, so that the replaced holder's handle on its record (its check after
    /// commit) sees that it is no longer its own. Best effort: the rename is what takes the
    /// lease, and a holder that misses this sees the rename at its renewal's check.
    fn revoke_in_place(&self, since_unix_ms: u64) {
        calls(4);
        let written = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)
            .and_then(|f| {
                let meta = f.metadata()?;
                if !meta.is_file() || meta.len() > LEASE_READ_MAX {
                    return Err(std::io::Error::other("not a lease record"));
                }
                f.write_all_at(&self.record(1, since_unix_ms), 0)?;
                f.sync_all()
            });
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(lease = %self.path.display(), error = %e, "could not write over the replaced lease record in place (its holder sees the takeover at its next renewal)")
            }
        }
    }

    /// Writes our record to a temporary file of our own and renames it over the lease file.
    fn write_replacing(&self, counter: u64, since_unix_ms: u64) -> Result<(), LeaseError> {
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".{}.tmp", self.nonce));
        let tmp = self.path.with_file_name(tmp_name);
        calls(5);
        let _ = std::fs::remove_file(&tmp);
        let io = |what: &str| {
            let what = what.to_string();
            move |e| LeaseError::Io(what, e)
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io("create a temporary copy of"))?;
        let written = f
            .write_all(&self.record(counter, since_unix_ms))
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            calls(1);
            let _ = std::fs::remove_file(&tmp);
            return Err(LeaseError::Io("replace".into(), e));
        }
        Ok(())
    }
}

/// The boot clock's reading in nanoseconds until which the lease may be used (0: not).
fn usable_until_ns(st: &LeaseState) -> u64 {
    match &st.held {
        Some(h) if h.fenced_until.is_none() => {
            let until = h.renewed + st.lease.saturating_sub(LeaseState::margin());
            until.0.as_nanos().min(u128::from(u64::MAX)) as u64
        }
        _ => 0,
    }
}

/// What [`Lease`] and its renewal thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<LeaseState>,
    /// [`usable_until_ns`] as of the last step: read without the lock, by SQLite's progress
    /// handler in the middle of a statement.
    usable_until_ns: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and publishes the lease's usability after it.
    fn step<T>(&self, f: impl FnOnce(&mut LeaseState) -> T) -> T {
        let mut st = self.lock();
        let r = f(&mut st);
        self.usable_until_ns
            .store(usable_until_ns(&st), Ordering::SeqCst);
        r
    }
}

/// Says, without a lock or a file operation, whether the lease may be used right now: SQLite
/// asks it every few thousand virtual-machine steps and interrupts a statement once the
/// lease could run out, so that a long statement stops touching the file in time.
#[derive(Debug, Clone)]
pub(crate) struct LeaseValidity(Arc<Shared>);

impl LeaseValidity {
    /// True while the lease is ours and not about to run out.
    pub(crate) fn usable_now(&self) -> bool {
        let until = self.0.usable_until_ns.load(Ordering::SeqCst);
        (Moment::now().0.as_nanos() as u64) < until
    }
}

/// One process's writer lease on one target file, renewed by a thread of its own while held
/// (every third of the lease, whatever the holder is doing), released on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    shared: Arc<Shared>,
    renewer: bool,
}

impl Lease {
    /// A lease (not taken yet) on the target file `target`, of `lease_ms` (at least 3000),
    /// waiting at most `wait_ms` for another holder.
    pub(crate) fn new(target: &Path, journal: Option<Uuid>, lease_ms: u64, wait_ms: u64) -> Lease {
        Lease {
            shared: Arc::new(Shared {
                state: Mutex::new(LeaseState::new(target, journal, lease_ms, wait_ms)),
                usable_until_ns: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            }),
            renewer: false,
        }
    }

    /// This lease removes other holders' leftover temporary files once it is first usable
    /// (see `LeaseState::sweep_tmp_files`).
    pub(crate) fn sweeping(self) -> Lease {
        self.shared.step(|st| st.sweep = true);
        self
    }

    /// See [`LeaseValidity`].
    pub(crate) fn validity(&self) -> LeaseValidity {
        LeaseValidity(Arc::clone(&self.shared))
    }

    /// Names the journal this lease is taken for.
    pub(crate) fn name_journal(&mut self, journal: Uuid) {
        self.shared.step(|st| st.name_journal(journal));
    }

    /// True if the lease is ours and usable now.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.lock().is_usable()
    }

    /// How many times this lease was taken (created or taken over): a new value means that
    /// another machine may have written the file since this process last held it.
    pub(crate) fn tenure(&self) -> u64 {
        self.shared.lock().tenure
    }

    /// [`Lease::is_usable`] as of the last step, without the lock (the renewal thread keeps
    /// it current): for the per-entry check.
    pub(crate) fn usable_now(&self) -> bool {
        LeaseValidity(Arc::clone(&self.shared)).usable_now()
    }

    /// Takes the lease (see `LeaseState::acquire`), then keeps it renewed from a thread.
    pub(crate) fn acquire(&mut self) -> Result<(), LeaseError> {
        self.shared.step(LeaseState::acquire)?;
        if !self.renewer {
            self.renewer = true;
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("syncjournal-lease".into())
                .spawn(move || renew_loop(&shared));
            match spawned {
                Ok(_) => self.shared.step(|st| st.renewer = true),
                Err(e) => {
                    self.renewer = false;
                    tracing::warn!(error = %e, "no lease renewal thread; the lease is renewed between statements only");
                }
            }
        }
        Ok(())
    }

    /// Renews the lease now if it is due.
    pub(crate) fn renew_if_due(&mut self) -> Result<(), LeaseError> {
        self.shared.step(LeaseState::renew_if_due)
    }

    /// The check after a commit (see `LeaseState::check_after_commit`): one read.
    pub(crate) fn check_after_commit(&mut self) -> Result<(), LeaseError> {
        self.shared.step(LeaseState::check_after_commit)
    }

    /// Gives the lease up (see `LeaseState::release`).
    pub(crate) fn release(&mut self) {
        self.shared.step(LeaseState::release);
    }
}

/// The renewal thread: renews while the lease is held, ends once the lease is dropped.
fn renew_loop(shared: &Shared) {
    RENEWAL_THREAD.with(|c| c.set(true));
    while !shared.stop.load(Ordering::SeqCst) {
        let pause = shared.step(|st| {
            if st.held.is_some()
                && let Err(e) = st.renew_if_due()
            {
                tracing::error!(lease = %st.path.display(), error = %e, "writer lease lost");
            }
            st.poll()
        });
        std::thread::sleep(pause);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
    }
}

impl std::ops::Add<Duration> for Moment {
    type Output = Moment;
    fn add(self, d: Duration) -> Moment {
        Moment(self.0 + d)
    }
}

/// Reads the lease file: never through a link, at most [`LEASE_READ_MAX`] bytes.
fn read(path: &Path) -> Result<Seen, LeaseError> {
    calls(1);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Seen::Absent),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(LeaseError::Hostile(format!(
                "{} is a symbolic link (not followed; remove it)",
                path.display()
            )));
        }
        Err(e) => return Err(LeaseError::Io("open".into(), e)),
    };
    calls(1);
    let meta = f.metadata().map_err(|e| LeaseError::Io("stat".into(), e))?;
    if !meta.is_file() {
        return Err(LeaseError::Hostile(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    Counted(f)
        .take(LEASE_READ_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LeaseError::Io("read".into(), e))?;
    if bytes.len() as u64 > LEASE_READ_MAX {
        return Err(LeaseError::Hostile(format!(
            "{} is larger than a lease record",
            path.display()
        )));
    }
    let rec = parse(&bytes);
    Ok(Seen::Present(bytes, rec))
}

/// An uncached read handle on the lease file at `path` (`O_DIRECT`, never through a link),
/// if the file system has uncached reads.
fn open_check(path: &Path) -> Option<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECT;
    calls(2);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// Reads the lease record through the uncached handle `f` (on `path`): at most
/// [`LEASE_READ_MAX`] bytes, into a buffer aligned as uncached reads need.
fn read_handle(f: &File, path: &Path) -> Result<Seen, LeaseError> {
    const ALIGN: usize = 4096;
    let want = 2 * LEASE_READ_MAX as usize;
    let mut raw = vec![0u8; want + ALIGN];
    let skip = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let buf = &mut raw[skip..skip + want];
    let mut n = 0;
    while n < buf.len() {
        calls(1);
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(LeaseError::Io("read".into(), e)),
        }
        // An uncached read of a whole aligned block at a time: a short one is the end.
        if n % ALIGN != 0 {
            break;
        }
    }
    if n as u64 > LEASE_READ_MAX {
        return Err(LeaseError::Hostile(format!(
            "{} is larger than a lease record",
            path.display()
        )));
    }
    let bytes = buf[..n].to_vec();
    let rec = parse(&bytes);
    Ok(Seen::Present(bytes, rec))
}

/// The record in `bytes`, if it is one (a record being written, or a foreign file, is not).
fn parse(bytes: &[u8]) -> Option<LeaseHolder> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != LEASE_MAGIC {
        return None;
    }
    let mut h = LeaseHolder {
        holder: String::new(),
        host: String::new(),
        pid: 0,
        journal: None,
        since_unix_ms: 0,
        lease_ms: 0,
        counter: 0,
        boot: None,
    };
    for line in lines {
        let Some((k, v)) = line.trim_end().split_once(' ') else {
            continue;
        };
        match k {
            "holder" => h.holder = v.to_string(),
            "host" => h.host = v.to_string(),
            "pid" => h.pid = v.parse().ok()?,
            "journal" if v != "-" => h.journal = Some(v.to_string()),
            "counter" => h.counter = v.parse().ok()?,
            "lease_ms" => h.lease_ms = v.parse().ok()?,
            "since_unix_ms" => h.since_unix_ms = v.parse().ok()?,
            "boot" => h.boot = Some(v.to_string()),
            _ => {}
        }
    }
    (!h.holder.is_empty() && h.lease_ms > 0).then_some(h)
}

/// An exclusive lock, among the processes of this machine, on the lease at `lease`: a file in
/// the temporary directory named after the lease's path, locked with `flock`. Held until the
/// returned file is dropped.
fn local_lock(lease: &Path) -> Result<File, LeaseError> {
    use std::hash::{Hash, Hasher};
    let abs = std::path::absolute(lease).unwrap_or_else(|_| lease.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    abs.hash(&mut h);
    let path = std::env::temp_dir().join(format!("syncjournal-lease-{:016x}.lock", h.finish()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| LeaseError::Io(format!("open the local lock {} of", path.display()), e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        LeaseError::Io(
            format!("lock the local lock {} of", path.display()),
            e.into(),
        )
    })?;
    Ok(f)
}

/// This boot of this machine, within this pid namespace: `<boot id>/<pid namespace>` (a pid
/// means one process only within one namespace of one boot), or `-` if unknown.
fn this_boot() -> String {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let ns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(80)
                .collect()
        };
        let (id, ns) = (clean(id.trim()), clean(&ns.to_string_lossy()));
        if id.is_empty() || ns.is_empty() {
            "-".into()
        } else {
            format!("{id}/{ns}")
        }
    })
    .clone()
}

/// This machine's host name, as a record can carry it (no spaces or line breaks).
fn hostname() -> String {
    let n = rustix::system::uname();
    let s = n.nodename().to_string_lossy();
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dir: &Path, ms: u64, wait: u64) -> LeaseState {
        LeaseState::new(&dir.join("t.db"), None, ms, wait)
    }

    #[test]
    fn one_holder_at_a_time_and_a_release_hands_over_at_once() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        let mut b = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        assert!(a.is_usable());
        match b.acquire() {
            Err(LeaseError::Held {
                holder: Some(h), ..
            }) => {
                assert_eq!(h.holder, a.nonce);
                assert_eq!(h.pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        a.release();
        assert!(!a.is_usable());
        b.acquire().unwrap();
        assert!(a.acquire().is_err());
        assert_eq!(
            lease_holder(&d.path().join("t.db"))
                .unwrap()
                .unwrap()
                .holder,
            b.nonce
        );
    }

    #[test]
    fn an_abandoned_lease_is_taken_over_after_its_expiry_and_a_fence() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        // The holder dies: its record stays, unchanged.
        std::mem::forget(a);
        let t = std::time::Instant::now();
        let mut b = lease(d.path(), 3_000, 20_000);
        b.acquire().unwrap();
        let took = t.elapsed();
        let expiry = LeaseState::expiry_after(Duration::from_secs(3));
        assert!(took >= 2 * expiry, "{took:?} < 2 × {expiry:?}");
        assert!(b.is_usable());
    }

    #[test]
    fn a_dead_holder_of_this_machine_is_taken_over_at_once() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 30_000, 0);
        a.acquire().unwrap();
        // Its record, as if written by a process of this boot that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let rec = String::from_utf8(a.record(1, 0)).unwrap().replace(
            &format!("pid {}\n", std::process::id()),
            &format!("pid {gone}\n"),
        );
        std::fs::write(&a.path, rec).unwrap();
        std::mem::forget(a);
        let t = std::time::Instant::now();
        let mut b = lease(d.path(), 30_000, 20_000);
        b.acquire().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // A record of another boot is waited out, not taken at once.
        let other = String::from_utf8(b.record(1, 0))
            .unwrap()
            .replace(&format!("boot {}", this_boot()), "boot another-boot");
        std::fs::write(&b.path, other).unwrap();
        std::mem::forget(b);
        let mut c = lease(d.path(), 30_000, 2_000);
        assert!(matches!(c.acquire(), Err(LeaseError::Held { .. })));
    }

    #[test]
    fn a_holder_paused_past_its_lease_finds_it_lost_and_touches_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        std::thread::sleep(Duration::from_millis(2_100)); // lease − margin has passed
        assert!(!a.is_usable());
        assert!(matches!(a.renew_if_due(), Err(LeaseError::Lost(_))));
        // It did not remove what may be another's record by now.
        assert!(lease_path(&d.path().join("t.db")).exists());
    }

    #[test]
    fn a_renewing_holder_keeps_its_lease_against_a_waiter() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        let mut b = lease(d.path(), 3_000, 0);
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(9) {
            a.renew_if_due().unwrap();
            assert!(b.acquire().is_err());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(a.is_usable());
        assert!(a.held.as_ref().unwrap().counter >= 3);
        a.check_ours().unwrap();
        a.check_after_commit().unwrap();
    }

    #[test]
    fn the_check_after_commit_reads_one_handle_and_a_takeover_writes_over_it_in_place() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        if a.check.is_none() {
            // This file system has no uncached reads: the check reads by name (tested below).
            eprintln!("no O_DIRECT under {}: skipped", d.path().display());
            return;
        }
        // A rename alone replaces the name, not the file the handle reads: the check after
        // commit does not see it (the renewal's check by name does).
        let b = lease(d.path(), 3_000, 0);
        b.write_replacing(1, 0).unwrap();
        a.check_after_commit().unwrap();
        assert!(matches!(a.check_ours(), Err(LeaseError::Lost(_))));
        // A takeover writes over the replaced record in place first: the handle sees it.
        std::fs::remove_file(lease_path(&d.path().join("t.db"))).unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        let mut c = lease(d.path(), 3_000, 0);
        c.replace_record(None).unwrap();
        match a.check_after_commit() {
            Err(LeaseError::Lost(why)) => assert!(why.contains("held by"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!a.is_usable() && a.check.is_none());
        // The taker's own check reads its record through its own handle.
        c.check_after_commit().unwrap();
    }

    #[test]
    fn a_lease_taken_over_is_seen_lost_at_the_check() {
        let d = tempfile::tempdir().unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        a.acquire().unwrap();
        // Another machine replaced the record (outside the assumptions: a is not expired).
        let mut b = lease(d.path(), 3_000, 0);
        b.replace_record(None).unwrap();
        a.check = None; // as without uncached reads: by name
        match a.check_after_commit() {
            Err(LeaseError::Lost(why)) => assert!(why.contains("held by"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!a.is_usable());
    }

    #[test]
    fn hostile_lease_files_are_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t.db");
        std::os::unix::fs::symlink("/etc/passwd", lease_path(&target)).unwrap();
        let mut a = lease(d.path(), 3_000, 0);
        assert!(matches!(a.acquire(), Err(LeaseError::Hostile(_))), "a link");
        std::fs::remove_file(lease_path(&target)).unwrap();
        std::fs::create_dir(lease_path(&target)).unwrap();
        assert!(
            matches!(a.acquire(), Err(LeaseError::Hostile(_))),
            "a directory"
        );
        std::fs::remove_dir(lease_path(&target)).unwrap();
        std::fs::write(lease_path(&target), vec![b'x'; 10_000]).unwrap();
        assert!(
            matches!(a.acquire(), Err(LeaseError::Hostile(_))),
            "too large"
        );
        std::fs::write(lease_path(&target), b"not a lease").unwrap();
        // Garbage is a record someone may be writing: waited for, not taken at once.
        assert!(matches!(
            a.acquire(),
            Err(LeaseError::Held { holder: None, .. })
        ));
    }

    #[test]
    fn a_crashed_holders_temporary_file_is_removed_once_the_lease_is_held() {
        let d = tempfile::tempdir().unwrap();
        let lease_file = lease_path(&d.path().join("t.db"));
        let name = lease_file.file_name().unwrap().to_str().unwrap().to_owned();
        let stale = d.path().join(format!("{name}.{}.tmp", Uuid::new_v4()));
        let not_a_holder = d.path().join(format!("{name}.notauuid.tmp"));
        let other = d.path().join("other.tmp");
        let linked = d.path().join(format!("{name}.{}.tmp", Uuid::new_v4()));
        for f in [&stale, &not_a_holder, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        std::os::unix::fs::symlink(&other, &linked).unwrap();
        // A read's lease does not sweep.
        let mut reader = lease(d.path(), 3_000, 0);
        reader.acquire().unwrap();
        assert!(stale.exists());
        reader.release();
        let mut a = lease(d.path(), 3_000, 0);
        a.sweep = true;
        a.acquire().unwrap();
        assert!(!stale.exists(), "the crashed holder's file is removed");
        assert!(not_a_holder.exists() && other.exists(), "other files stay");
        assert!(
            std::fs::symlink_metadata(&linked).is_ok(),
            "a link is not a holder's file"
        );
    }

    #[test]
    fn records_round_trip_and_pin_their_constants() {
        let d = tempfile::tempdir().unwrap();
        let a = lease(d.path(), 4_000, 0);
        let rec = a.record(7, 1234);
        assert_eq!(rec.len(), LEASE_RECORD_BYTES);
        let h = parse(&rec).unwrap();
        assert_eq!((h.counter, h.lease_ms, h.since_unix_ms), (7, 4_000, 1234));
        assert_eq!(h.holder, a.nonce);
        assert_eq!(LEASE_SUFFIX, "-sjlease");
        assert_eq!(LEASE_MAGIC, "syncjournal-lease 1");
        assert_eq!((LEASE_DRIFT_PERCENT, LEASE_MARGIN_MS), (5, 1_000));
        assert_eq!(
            lease_path(Path::new("/mnt/share/infra.db")),
            Path::new("/mnt/share/infra.db-sjlease")
        );
    }
}
