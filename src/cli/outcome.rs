//! What a command returns: its exit code (the codes `args::EXIT_CODES` documents), or a
//! failure that `main` prints as one line.

use syncjournal::Error;

/// Exit codes (see `args::EXIT_CODES`).
pub const OK: u8 = 0;
/// Damage found (`verify`, `dump`, `status`; `check-target`: in the target).
pub const DAMAGE: u8 = 1;
/// Usage error, or the operation failed.
pub const ERROR: u8 = 2;
/// Status: the last sync failed.
pub const FAILING: u8 = 3;
/// Status: pending entries are not moving.
pub const STALLED: u8 = 4;
/// Status: the target's watermark is behind the acknowledgement (it lost entries).
pub const TARGET_BEHIND: u8 = 5;
/// Status: the target is damaged, or ahead of this journal (not the target it fed).
pub const TARGET_BAD: u8 = 6;

/// A command's failure.
#[derive(Debug)]
pub enum Failure {
    /// From the library.
    Lib(Error),
    /// Damage found in the journal (after printing what could be read): exit 1.
    Damage(Error),
    /// Writing the output failed (a broken pipe is not an error: see `main`).
    Io(std::io::Error),
    /// Something else, already phrased for the user.
    Msg(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lib(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lib(e) | Failure::Damage(e) => write!(f, "{e}"),
            Failure::Io(e) => write!(f, "writing output: {e}"),
            Failure::Msg(m) => f.write_str(m),
        }
    }
}

impl Failure {
    /// The exit code `main` gives for it: [`DAMAGE`] for damage, 2 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Damage(_) => DAMAGE,
            _ => ERROR,
        }
    }
}

/// A command's outcome: an exit code.
pub type Outcome = Result<u8, Failure>;
