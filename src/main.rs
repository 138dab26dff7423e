//! The `syncjournal` command line: `syncjournal: <message>` on stderr, documented exit codes
//! (see `syncjournal --help`), and a broken pipe (`dump | head`) is not an error.

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::args::{Cli, Command};
use cli::fmt::escape;
use cli::outcome::Failure;
use cli::{conflicts, journal_cmds, sync_cmds};

fn main() -> ExitCode {
    let args = Cli::parse();
    init_logging(args.verbose, args.quiet);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match args.command {
        Command::Demo {
            dir,
            changes,
            target,
            machines,
        } => cli::demo::run(&mut out, dir, changes, target, machines),
        Command::Status {
            dir,
            target,
            json,
            format,
            stalled_after,
        } => cli::status::status(
            &mut out,
            &dir,
            target.as_ref(),
            if json {
                cli::args::StatusFormat::Json
            } else {
                format
            },
            Duration::from_secs(stalled_after),
        ),
        Command::Dump {
            dir,
            from,
            to,
            json,
        } => journal_cmds::dump(&mut out, &dir, from, to, json),
        Command::Verify { dir } => journal_cmds::verify(&mut out, &dir),
        Command::Recover { dir, mode } => journal_cmds::recover(&mut out, &dir, mode),
        Command::Sync {
            dir,
            target,
            follow,
            batch,
            quarantine,
            adopt_target,
        } => sync_cmds::sync(
            &mut out,
            &dir,
            &target.target,
            sync_cmds::SyncFlags {
                follow,
                batch,
                quarantine,
                adopt_target,
            },
        ),
        Command::Reseed {
            dir,
            cache,
            target,
            json,
        } => sync_cmds::reseed(&mut out, &dir, &cache, &target.target, json),
        Command::CheckTarget { db, json } => cli::check::check_target_cmd(&mut out, &db, json),
        Command::Quarantine(q) => sync_cmds::quarantine(&mut out, q),
        Command::Conflicts(c) => conflicts::conflicts(&mut out, c),
    };
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(code), Ok(())) => ExitCode::from(code),
        (Err(Failure::Io(e)), _) | (Ok(_), Err(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        (Ok(_), Err(e)) => {
            eprintln!("syncjournal: writing output: {e}");
            ExitCode::from(2)
        }
        (Err(e), _) => {
            // Messages can carry names and values from the journal or the target.
            eprintln!("syncjournal: {}", escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr, one line per event, without colour codes and with control characters
/// escaped (events can carry names and values from a journal or a target); `-v`/`-q` choose
/// the level (RUST_LOG, if set, wins). By default only errors are logged: a command reports
/// its own outcome, in one line on failure.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, 1..) => "off",
        (0, 0) => "error",
        (1, 0) => "warn",
        (2, 0) => "info",
        (3, 0) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| EscapingStderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

/// Stderr for log events: each event comes in one write, ending with its newline; every other
/// control character in it (a newline inside a name, an escape sequence) is escaped.
struct EscapingStderr;

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (line, end) = match text.strip_suffix('\n') {
            Some(line) => (line, "\n"),
            None => (&*text, ""),
        };
        let mut err = std::io::stderr().lock();
        err.write_all(escape(line).as_bytes())?;
        err.write_all(end.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
