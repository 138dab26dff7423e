//! Rust glue for the netshare harness (the shell scripts beside this file): a real SFTP share
//! (sshd, internal-sftp only, in a network namespace of its own behind a veth pair), mounted
//! with sshfs in the normal mount namespace, with latency from a userspace relay and faults
//! (link down, blackhole, server crash, frozen server).
//!
//! Every script runs with a timeout; [`Share`] tears everything down when dropped, and the
//! fault guard [`Healer`] heals when dropped (also while a panic unwinds). A process blocked
//! on a dead FUSE mount can be unkillable: [`Share::abort_fuse`] (and `down.sh`) abort the
//! FUSE connection through fusectl so that it gets an error instead.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::process::{is_root, summary};

/// The apt-get line that installs what the harness needs (Debian 12).
pub const APT_PACKAGES: &str = "sshfs fuse3 openssh-server openssh-sftp-server iptables";

/// A fault [`Share::fault`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The veth link goes down: packets vanish, TCP retransmits, new connections time out.
    Link,
    /// iptables DROP in both directions, link up (a silent blackhole).
    Drop,
    /// Established connections get a TCP reset.
    Reset,
    /// SIGKILL to sshd and all its sessions (a server crash).
    Kill,
    /// SIGSTOP to sshd and all its sessions (a hung server).
    Freeze,
    /// Mount 2's traffic dropped (its own relay's port): one machine's link cut, the other's
    /// working.
    CutMount2,
}

impl Fault {
    fn arg(self) -> &'static str {
        match self {
            Fault::Link => "link",
            Fault::Drop => "drop",
            Fault::Reset => "reset",
            Fault::Kill => "kill",
            Fault::Freeze => "freeze",
            Fault::CutMount2 => "cut2",
        }
    }
}

/// The running share. Dropping it tears it down (unless `SJNS_KEEP` is set).
#[derive(Debug)]
pub struct Share {
    scripts: PathBuf,
    /// The mount point: the client's view of the share.
    pub mnt: PathBuf,
    /// A second mount of the same export: another machine's view (no lock is shared between
    /// the two mounts).
    pub mnt2: PathBuf,
    /// The server's directory: what really landed.
    pub export: PathBuf,
    /// The harness's state directory.
    pub state: PathBuf,
    name: String,
    down: AtomicBool,
    /// Held for the whole run: two test processes never drive one share.
    _run_lock: File,
}

/// The scripts' directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/netshare")
}

fn instance_name() -> String {
    std::env::var("SJNS_NAME").unwrap_or_else(|_| "sjtest".into())
}

/// Runs `bash script args…` with a timeout; returns stdout, or an error with the output.
pub fn run_script(script: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut out = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let mut err = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let what = format!(
        "{} {}",
        script.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    )
    .trim_end()
    .to_string();
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{what}: cannot run bash: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{what}: wait: {e}")),
        }
    };
    let read = |f: &mut File| {
        let mut s = String::new();
        let _ = f.seek(SeekFrom::Start(0));
        let _ = f.read_to_string(&mut s);
        s
    };
    let (stdout, stderr) = (read(&mut out), read(&mut err));
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!(
            "{what}: exit {}: {}",
            s.code().map_or("signal".into(), |c| c.to_string()),
            stderr.trim()
        )),
        None => Err(format!(
            "{what}: timed out after {timeout:?}: {}",
            stderr.trim()
        )),
    }
}

/// Takes the run lock, waiting up to `wait`.
fn run_lock(name: &str, wait: Duration) -> Result<File, String> {
    let path = std::env::temp_dir().join(format!("{name}-netshare.run.lock"));
    let f = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                return Err(format!(
                    "another test process holds {} ({e})",
                    path.display()
                ));
            }
        }
    }
}

impl Share {
    /// Checks what the harness needs and brings the share up (idempotent: an existing share
    /// of this instance is healed and reused, leftovers are cleaned up). `Err` is the reason
    /// the share cannot be had here (for a skip).
    pub fn up() -> Result<Share, String> {
        if !is_root() {
            return Err("not running as root (network namespaces, FUSE mounts)".into());
        }
        let scripts = scripts_dir();
        let out = Command::new("bash")
            .arg("-c")
            .arg(". \"$1\"; sj_missing_tools")
            .arg("bash")
            .arg(scripts.join("lib.sh"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        let missing = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !missing.is_empty() {
            return Err(format!(
                "missing tools: {missing} (apt-get install -y --no-install-recommends {APT_PACKAGES})"
            ));
        }
        let name = instance_name();
        let lock = run_lock(&name, Duration::from_secs(240))?;
        let out = match run_script(&scripts.join("up.sh"), &[], Duration::from_secs(60)) {
            Ok(out) => out,
            Err(e) => {
                // Leave nothing half built behind.
                if let Err(d) = run_script(&scripts.join("down.sh"), &[], Duration::from_secs(60)) {
                    summary(&format!("netshare: down.sh after a failed up.sh: {d}"));
                }
                return Err(format!("the share cannot come up: {e}"));
            }
        };
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(PathBuf::from)
                .ok_or_else(|| format!("up.sh printed no {k}: {out}"))
        };
        Ok(Share {
            mnt: get("SJNS_MNT")?,
            mnt2: get("SJNS_MNT2")?,
            export: get("SJNS_EXPORT")?,
            state: get("SJNS_STATE")?,
            scripts,
            name,
            down: AtomicBool::new(false),
            _run_lock: lock,
        })
    }

    fn script(&self, name: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
        run_script(&self.scripts.join(name), args, timeout)
    }

    /// Runs `up.sh` again: heals any fault, clears the latency, rebuilds a broken mount.
    pub fn reset(&self) -> Result<(), String> {
        self.script("up.sh", &[], Duration::from_secs(60))
            .map(|_| ())
    }

    /// Injects `fault` (through `fault.sh`). Returns a guard that heals when dropped.
    pub fn fault(&self, fault: Fault) -> Result<Healer<'_>, String> {
        self.inject(fault)?;
        Ok(Healer { share: self })
    }

    /// Injects `fault` without a guard.
    pub fn inject(&self, fault: Fault) -> Result<(), String> {
        self.script("fault.sh", &[fault.arg()], Duration::from_secs(20))
            .map(|_| ())
    }

    /// Heals every fault (through `heal.sh`).
    pub fn heal(&self) -> Result<(), String> {
        self.script("heal.sh", &[], Duration::from_secs(30))
            .map(|_| ())
    }

    /// Sets the one-way latency the relay adds in each direction.
    pub fn set_delay_ms(&self, ms: u32) -> Result<(), String> {
        self.script(
            "shape.sh",
            &["--delay", &ms.to_string()],
            Duration::from_secs(10),
        )
        .map(|_| ())
    }

    /// The pids of every process in the server's network namespace (sshd and its sessions),
    /// found through `/proc/*/ns/net`.
    pub fn server_pids(&self) -> Vec<u32> {
        let ns = format!("/run/netns/{}-srv", self.name);
        let Ok(ino) = std::fs::metadata(&ns).map(|m| m.ino()) else {
            return Vec::new();
        };
        let want = format!("net:[{ino}]");
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|l| l.to_string_lossy() == want)
            })
            .collect()
    }

    /// Kills the file server now (SIGKILL to `pids`, from [`Share::server_pids`]): a quicker
    /// path than `fault.sh kill`, for a kill timed within a commit. `heal` restarts it.
    pub fn kill_pids(pids: &[u32]) -> Result<(), String> {
        if pids.is_empty() {
            return Err("no server process to kill".into());
        }
        let st = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("kill -KILL {pids:?}: {st}"))
        }
    }

    /// Aborts the FUSE connection of the mount (a process blocked on it gets an error). The
    /// mount is then dead until [`Share::reset`] rebuilds it.
    pub fn abort_fuse(&self) {
        let mnt = self.mnt.to_string_lossy().into_owned();
        let conn = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|mi| {
                mi.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    (f.get(4) == Some(&mnt.as_str()))
                        .then(|| f.get(2)?.split(':').nth(1).map(str::to_string))
                        .flatten()
                })
            });
        let Some(conn) = conn else { return };
        let ctl = Path::new("/sys/fs/fuse/connections");
        if !ctl.join(&conn).exists() {
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "fusectl"])
                .arg(ctl)
                .stderr(Stdio::null())
                .status();
        }
        match std::fs::write(ctl.join(&conn).join("abort"), "1") {
            Ok(()) => summary(&format!("netshare: aborted the FUSE connection of {mnt}")),
            Err(e) => summary(&format!(
                "netshare: could not abort the FUSE connection {conn}: {e}"
            )),
        }
    }

    /// Tears the share down (idempotent; also done on drop).
    pub fn down(&self) {
        if self.down.swap(true, Ordering::SeqCst) {
            return;
        }
        if std::env::var_os("SJNS_KEEP").is_some() {
            summary(&format!(
                "netshare: SJNS_KEEP is set: leaving the share up at {}",
                self.mnt.display()
            ));
            return;
        }
        if let Err(e) = self.script("down.sh", &[], Duration::from_secs(60)) {
            summary(&format!("netshare: down.sh failed: {e}"));
            // Last resort: abort the FUSE connection, so nothing stays blocked on it.
            self.abort_fuse();
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.down();
    }
}

/// Heals the share when dropped.
#[must_use = "the fault is healed when the guard is dropped"]
#[derive(Debug)]
pub struct Healer<'a> {
    share: &'a Share,
}

impl<'a> Healer<'a> {
    /// A guard that heals `share` when dropped (whatever fault is injected meanwhile).
    pub fn new(share: &'a Share) -> Healer<'a> {
        Healer { share }
    }

    /// Heals now, reporting a failure.
    pub fn heal(self) -> Result<(), String> {
        let r = self.share.heal();
        std::mem::forget(self);
        r
    }
}

impl Drop for Healer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.share.heal() {
            summary(&format!("netshare: heal failed: {e}"));
        }
    }
}
