//! Processes and timeouts: the hang guard, lines on the real stderr, loud skips, root-only
//! guards (a tmpfs mount, `chattr +i`, a read-only path), and child processes that re-execute
//! the test binary to run one `#[ignore]`d test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Hang guard of the processes the CLI tests run and wait for: one still running after this is
/// killed and the test fails. Nothing is asserted about how long anything takes.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Hang guard of the kill -9 suites while they wait for a child's output.
pub const CHILD_WAIT: Duration = Duration::from_secs(30);

/// The environment variable that sets the number of cycles of a kill -9 soak.
pub const SOAK_ENV: &str = "SYNCJOURNAL_SOAK_CYCLES";

/// The number in the environment variable `var` (to run a soak, or replay a failure's size),
/// else `default`.
pub fn count_from_env<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` on a thread and panics if it has not finished after `secs` seconds. A hang guard
/// only: nothing is asserted about how long `f` takes.
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("hang guard: the test body did not finish within {secs} s (deadlock?)")
        }
    }
}

/// Tests of one binary that must not share the machine with each other's load: [`alone`] runs
/// its caller with none of the [`alongside`] callers running, and those run alongside each
/// other (as the tests of one binary do).
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a timing-sensitive test (the network share's faults) for its whole run: no
/// [`alongside`] test runs meanwhile.
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by a heavy test (a kill -9 suite) for its whole run: it may run alongside others of
/// its kind, never alongside an [`alone`] test.
pub fn alongside() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes one line to the process's real stderr (the test harness captures `eprintln!`, not
/// direct writes), so that a suite's summary shows in a plain `cargo test` run.
pub fn summary(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

/// True when the effective user is root (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Skips a scenario this environment cannot set up LOUDLY (on the real stderr), and fails
/// instead when the environment variable `CI` is set: in CI every scenario must run.
pub fn skip_or_fail(what: &str, why: &str) {
    let msg = format!(
        "!!!!!!!!!!!!!!!! SKIPPED {what}: {why} — this scenario was NOT tested !!!!!!!!!!!!!!!!"
    );
    summary(&msg);
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg} (CI is set: failing instead of skipping)"
    );
}

/// A temporary directory in `/dev/shm` (RAM) when it exists, else in the default place.
pub fn shm_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("syncjournal-torture-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("temporary directory")
}

/// The name the test harness gives the test function `name` of the module `module` (pass
/// `module_path!()`): the module path without the test binary's own name, then `name`.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    }
}

/// A command that re-runs this test binary with only the `#[ignore]`d test `name` (its full
/// name: see [`test_path`]), with its output shown, and the environment variable `var` set to
/// `value`.
pub fn child_test_command(name: &str, var: &str, value: &Path) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--ignored",
        "--test-threads",
        "1",
    ])
    .env(var, value)
    .env("RUST_BACKTRACE", "1");
    cmd
}

/// A child process whose stdout lines arrive on a channel. Lines cut by a kill (no final
/// newline) are dropped: they promise nothing.
pub struct ChildLines {
    pub child: Child,
    pub rx: Receiver<String>,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl ChildLines {
    /// Spawns `cmd` with stdout piped (stdin and stderr as the caller set them).
    pub fn spawn(mut cmd: Command) -> ChildLines {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) => {
                        if tx.send(line.trim_end().to_owned()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        ChildLines {
            child,
            rx,
            pump: Some(pump),
        }
    }

    /// Spawns `cmd` with stdin closed, stdout piped and stderr written to the file
    /// `stderr_path` (read it to explain a failure).
    pub fn spawn_logged(mut cmd: Command, stderr_path: &Path) -> ChildLines {
        let stderr = std::fs::File::create(stderr_path).expect("create the child's stderr file");
        cmd.stdin(Stdio::null()).stderr(Stdio::from(stderr));
        ChildLines::spawn(cmd)
    }

    /// Kills the child with SIGKILL and waits for it; passes the lines it had not delivered yet
    /// to `on_line`. An error unless it died of that signal.
    pub fn kill9(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<(), String> {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("wait for the child");
        for l in self.drain() {
            on_line(&l);
        }
        if status.signal() == Some(9) {
            Ok(())
        } else {
            Err(format!("the child did not die of SIGKILL but {status:?}"))
        }
    }

    /// Waits (hang guard `max`) for a line containing `mark`; returns the text after it.
    /// Lines before it are passed to `other`. An error if the child exits first.
    pub fn wait_for(
        &mut self,
        mark: &str,
        max: Duration,
        other: &mut dyn FnMut(&str),
    ) -> Result<String, String> {
        let deadline = Instant::now() + max;
        loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => match l.find(mark) {
                    Some(i) => return Ok(l[i + mark.len()..].trim().to_owned()),
                    None => other(&l),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "hang guard: no {mark:?} from the child within {max:?}"
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(format!("the child exited before {mark:?}: {status:?}"));
                }
            }
        }
    }

    /// Waits for the stdout pump to end (after the child died) and returns the lines it had
    /// not delivered yet.
    pub fn drain(&mut self) -> Vec<String> {
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
        self.rx.try_iter().collect()
    }
}

impl Drop for ChildLines {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a stream to its end on a thread.
pub fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    })
}

/// Waits for `child`; kills it and panics after [`HANG_GUARD`].
pub fn wait_guarded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hang guard: `{what}` still running after {HANG_GUARD:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds; panics after [`HANG_GUARD`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_within(what, HANG_GUARD, Duration::from_millis(20), cond);
}

/// Polls `cond` every `poll` until it holds; panics (a hang guard) after `max`.
pub fn wait_within(what: &str, max: Duration, poll: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "hang guard: {what} did not happen within {max:?}"
        );
        std::thread::sleep(poll);
    }
}

/// A tmpfs mounted for the life of the guard (root only); unmounted on drop, lazily if busy.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (`mount -o size=…`) at `at`, or says why it cannot.
    pub fn mount(at: &Path, size: &str) -> Result<TmpfsMount, String> {
        if !is_root() {
            return Err("needs root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// `chattr FLAG PATH`, or why it failed.
fn chattr(flag: &str, path: &Path) -> Result<(), String> {
    let out = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chattr {flag} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `chattr +i` on some paths for the life of the guard; `chattr -i` on drop (in reverse
/// order). As root, `chmod` does not stop writes; the immutable attribute does.
pub struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    /// Makes every path immutable, or undoes what it did and reports why it could not.
    pub fn make(paths: &[&Path]) -> Result<Immutable, String> {
        if !is_root() {
            return Err("needs root".into());
        }
        let mut guard = Immutable { paths: Vec::new() };
        for p in paths {
            chattr("+i", p)?;
            guard.paths.push(p.to_path_buf());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in self.paths.iter().rev() {
            if let Err(e) = chattr("-i", p) {
                summary(&format!("WARNING: could not undo chattr +i: {e}"));
            }
        }
    }
}

/// True if `path` (a file) can be opened for writing, or (a directory) can get a new entry.
pub fn writable(path: &Path) -> bool {
    if path.is_dir() {
        let probe = path.join(".replay-test-write-probe");
        match std::fs::File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                true
            }
            Err(_) => false,
        }
    } else {
        std::fs::OpenOptions::new().write(true).open(path).is_ok()
    }
}

/// How a path was made read-only, and how to undo it (on drop).
#[derive(Debug)]
pub struct ReadOnly {
    path: PathBuf,
    mode: u32,
    immutable: bool,
    /// How the path was made read-only, for messages.
    pub how: String,
}

impl ReadOnly {
    /// Makes `path` read-only: `chmod` (0444 for a file, 0555 for a directory) and, where
    /// that does not stop writes (root), `chattr +i`. `None` if nothing works: the caller
    /// skips loudly (or fails under `CI`).
    pub fn make(path: &Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        let ro = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(ro)).unwrap();
        let mut guard = ReadOnly {
            path: path.to_path_buf(),
            mode,
            immutable: false,
            how: format!("chmod {ro:o}"),
        };
        if !writable(path) {
            return Some(guard);
        }
        if chattr("+i", path).is_ok() {
            guard.immutable = true;
            guard.how = format!("chmod {ro:o} (ineffective: running as root) and chattr +i");
            if !writable(path) {
                return Some(guard);
            }
        }
        None
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = chattr("-i", &self.path);
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
    }
}

/// The configuration of a model test: `PROPTEST_CASES` cases (else `cases`), no failure
/// persistence, shrinking bounded by `shrink_iters`, and a seed fixed up front (from
/// `PROPTEST_RNG_SEED`, else the clock) so that a failure can name it.
pub fn model_config(cases: u32, shrink_iters: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let mut config = Config {
        cases: count_from_env("PROPTEST_CASES", cases),
        failure_persistence: None,
        max_shrink_iters: shrink_iters,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        config.rng_seed = RngSeed::Fixed(seed);
    }
    config
}
