//! Command-line arguments: parsing only; `commands` does the work through the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use syncjournal::TargetSpec;

use syncjournal::Lsn;

/// The exit codes, documented in `--help` and in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (status: in sync, or syncing normally; check-target: the target is healthy)
  1  damage: verify, dump or status found damage in the journal, or check-target found the
     target failing its integrity check
  2  usage error, or the operation failed (the message says why; sync: the journal holds
     records of an application's own kind; check-target: unreadable, or unusable by
     syncjournal as it is)
  3  status: the last sync attempt failed (the error is shown), the target named could not be
     read (TARGET UNREADABLE), or the journal is poisoned
  4  status: entries are pending and the queue has not moved for longer than --stalled-after
  5  status: TARGET BEHIND: the target lost entries it had applied (restored from an older
     backup, lost writes); the status says whether the journal still holds them
  6  status: TARGET DAMAGED (fails its integrity check) or TARGET AHEAD (not the target this
     journal fed, or the journal lost records)";

/// syncjournal: a checksummed, memory-mapped journal that makes a local SQLite cache sync
/// exactly once to a shared database.
#[derive(Debug, Parser)]
#[command(
    name = "syncjournal",
    version,
    about,
    after_help = EXIT_CODES,
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (default errors only; -v warnings, -vv info, -vvv debug,
    /// -vvvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No log output on stderr (the command's own messages remain).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job on an embedded example: a cache, a journal and a "share" database of
    /// certificates, hosts and domains; apply a realistic workload, sync, and check that the
    /// share equals the cache.
    #[command(
        after_help = "Example:\n  syncjournal demo\n  syncjournal demo /tmp/sj-demo --changes 20000"
    )]
    Demo {
        /// Where to put the files (default: a new temporary directory, printed).
        dir: Option<PathBuf>,
        /// Change sets to apply.
        #[arg(long, default_value_t = 5000)]
        changes: usize,
        /// Replay to this target instead of a new SQLite "share" file: a PostgreSQL server
        /// (`postgres://user@host/db`; the demo's tables go in a schema `syncjournal_demo`,
        /// dropped and created again).
        #[arg(long, value_parser = parse_target)]
        target: Option<TargetSpec>,
        /// Run the inventory on this many machines (2 to 8) sharing one SQLite "share" file,
        /// each with its own journal and cache: they edit at once, sync and pull, and every
        /// machine's status is shown. Default: 1 (the single-machine demo).
        #[arg(long, default_value_t = 1)]
        machines: usize,
    },

    /// Show the sync status from durable state: head, acknowledged and target LSNs, pending
    /// entries and bytes, last error, stalled since. Reads the journal without modifying it,
    /// even while an application has it open.
    #[command(after_help = format!("Example:\n  syncjournal status /var/lib/app/journal --target /mnt/share/app.db\n  syncjournal status /var/lib/app/journal --json\n  syncjournal status /var/lib/app/journal --target /mnt/share/app.db --format prometheus > /var/lib/node_exporter/syncjournal.prom\n\n{EXIT_CODES}"))]
    Status {
        /// The journal directory.
        dir: PathBuf,
        /// Also read the target's watermark and quarantine count now (without it, pending
        /// entries are counted from the journal's acknowledgement).
        #[arg(long, value_parser = parse_target)]
        target: Option<TargetSpec>,
        /// Print JSON instead of a table (the same as --format json).
        #[arg(long)]
        json: bool,
        /// Output format: a table, JSON, or the Prometheus text exposition format (for the
        /// node_exporter textfile collector).
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
        /// Seconds without progress after which pending entries count as stalled (exit 4).
        #[arg(long, default_value_t = 300)]
        stalled_after: u64,
    },

    /// Print the journal's entries, decoded: LSN, time, each mutation (table, key, columns);
    /// records of an application's own kind as kind, size and their first bytes. Streams:
    /// works on journals of any size. Exit 1 on damage, after the entries before it.
    #[command(
        after_help = "Example:\n  syncjournal dump /var/lib/app/journal --from 1200 --to 1300\n  syncjournal dump /var/lib/app/journal --json | head"
    )]
    Dump {
        /// The journal directory.
        dir: PathBuf,
        /// First LSN to print.
        #[arg(long)]
        from: Option<Lsn>,
        /// Last LSN to print.
        #[arg(long)]
        to: Option<Lsn>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },

    /// Check every record and the checksum chain without modifying anything; report every
    /// damaged region (segment, offset, kind) and what to run next. Exit 1 on damage.
    #[command(after_help = "Example:\n  syncjournal verify /var/lib/app/journal")]
    Verify {
        /// The journal directory.
        dir: PathBuf,
    },

    /// Repair a journal: cut a torn tail, or (salvage) replace damaged records by gap records.
    /// Damaged bytes are kept in DIR/forensics. The application must be stopped.
    #[command(
        after_help = "Example:\n  syncjournal recover /var/lib/app/journal\n  syncjournal recover /var/lib/app/journal --mode salvage"
    )]
    Recover {
        /// The journal directory.
        dir: PathBuf,
        /// What to repair.
        #[arg(long, value_enum, default_value_t = RecoverMode::TornTail)]
        mode: RecoverMode,
    },

    /// Apply the journal's pending entries to the target database now, exactly once. If the
    /// application has the journal open, follows it read-only up to its durable head. Applies
    /// change sets only: a journal holding records of an application's own event kind is
    /// refused before the target is touched (replay those with the application's Replayer).
    #[command(
        after_help = "Example:\n  syncjournal sync /var/lib/app/journal --target /mnt/share/app.db\n  syncjournal sync /var/lib/app/journal --target /mnt/share/app.db --follow"
    )]
    Sync {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Keep replaying as entries arrive, until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Most entries per target transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Quarantine entries the target refuses (default: stop at the first one).
        #[arg(long)]
        quarantine: bool,
        /// Make this target the one the journal is acknowledged against. Without it, a sync to
        /// another database than the one the journal was acknowledged against applies the
        /// entries but acknowledges nothing (so retention keeps them for the right one).
        #[arg(long)]
        adopt_target: bool,
    },

    /// Rebuild a store's cache from the target: every row of the cache's tables as the target
    /// has them, then the journal's entries the target does not hold yet on top, and the pull
    /// cursor at the target's change-log head — in one cache transaction. For a new machine,
    /// a lost or restored cache, or a cache whose pull cursor is older than the change log
    /// keeps. The journal must not be open in another process (the application).
    #[command(
        after_help = "Example:\n  syncjournal reseed /var/lib/app/journal /var/lib/app/cache.db --target /mnt/share/app.db"
    )]
    Reseed {
        /// The journal directory.
        dir: PathBuf,
        /// The cache database (it must exist, with the application's tables).
        cache: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Check a target database without changing it (nor creating it): its integrity
    /// (`PRAGMA integrity_check`), its journal mode (WAL is refused for a share), syncjournal's
    /// progress and quarantine tables, and the journals it has applied (watermark, when it
    /// last moved, entries quarantined). Exit 0 if all is well, 1 if the integrity check
    /// fails, 2 if the target cannot be read or syncjournal cannot use it.
    #[command(after_help = format!("Example:\n  syncjournal check-target /mnt/share/app.db\n  syncjournal check-target /mnt/share/app.db --json\n\n{EXIT_CODES}"))]
    CheckTarget {
        /// The target: an SQLite database file, or a PostgreSQL server (`postgres://…`).
        #[arg(value_parser = parse_target)]
        db: TargetSpec,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// List, retry or discard entries the target refused and quarantined.
    #[command(
        subcommand,
        after_help = "Example:\n  syncjournal quarantine list /var/lib/app/journal --target /mnt/share/app.db\n  syncjournal quarantine retry /var/lib/app/journal --target /mnt/share/app.db 1234"
    )]
    Quarantine(QuarantineCommand),

    /// List or show the conflicts recorded on the target: entries that changed a row another
    /// machine had changed since, each with both sides and how it was settled.
    #[command(
        subcommand,
        after_help = "Example:\n  syncjournal conflicts list /var/lib/app/journal --target /mnt/share/app.db\n  syncjournal conflicts show /var/lib/app/journal --target /mnt/share/app.db 17"
    )]
    Conflicts(ConflictsCommand),
}

/// `conflicts` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// List conflicts, newest first, with the counts of resolved and pending ones.
    #[command(
        after_help = "Example:\n  syncjournal conflicts list /var/lib/app/journal --target /mnt/share/app.db --all"
    )]
    List {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Every journal's conflicts, not only this journal's.
        #[arg(long)]
        all: bool,
        /// Most conflicts listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one conflict: both sides, the base, and the resolution.
    #[command(
        after_help = "Example:\n  syncjournal conflicts show /var/lib/app/journal --target /mnt/share/app.db 17"
    )]
    Show {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// The conflict's number (from `conflicts list`).
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The target database argument.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The target: an SQLite database file (it must exist), or a PostgreSQL server
    /// (`postgres://user@host:port/db`, `postgresql://…`, or libpq `host=… dbname=…`).
    #[arg(long, value_parser = parse_target)]
    pub target: TargetSpec,
}

/// Reads a `--target` value as a user means it (see [`TargetSpec::parse`]).
fn parse_target(s: &str) -> Result<TargetSpec, String> {
    if s.trim().is_empty() {
        return Err("an empty target names nothing".into());
    }
    Ok(TargetSpec::parse(s))
}

/// `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined entries.
    #[command(
        after_help = "Example:\n  syncjournal quarantine list /var/lib/app/journal --target /mnt/share/app.db"
    )]
    List {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a quarantined entry again (after fixing its cause); it leaves quarantine if it
    /// applies.
    #[command(
        after_help = "Example:\n  syncjournal quarantine retry /var/lib/app/journal --target /mnt/share/app.db 1234"
    )]
    Retry {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// The entry's LSN.
        lsn: Lsn,
    },
    /// Remove a quarantined entry for good.
    #[command(
        after_help = "Example:\n  syncjournal quarantine discard /var/lib/app/journal --target /mnt/share/app.db 1234"
    )]
    Discard {
        /// The journal directory.
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// The entry's LSN.
        lsn: Lsn,
    },
}

/// Output formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A table for people.
    Text,
    /// One JSON object.
    Json,
    /// Prometheus text exposition format.
    Prometheus,
}

/// Repair modes of `recover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecoverMode {
    /// Cut a torn tail (an incomplete last write); refuse damage in the middle.
    TornTail,
    /// Also replace damaged records in the middle by gap records, reporting the LSNs lost.
    Salvage,
}
