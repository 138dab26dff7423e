//! A throwaway PostgreSQL 15 cluster for a test: `initdb` in a temporary directory (run as the
//! unprivileged `postgres` user when the tests run as root: `initdb` refuses root), a unix
//! socket in that directory and a free 127.0.0.1 port; stopped (`-m immediate`) and removed on
//! drop, also when the test panics.
//!
//! Suites that run one body per target kind share one cluster per test binary ([`shared`]),
//! a database per test target; a watchdog process stops and removes that cluster once the
//! binary has exited (statics are never dropped). A [`Proxy`] in front of the server lets a
//! test take the server out of reach and bring it back without stopping it.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::process::{is_root, skip_or_fail};

/// The server binaries (Debian's `postgresql-15`).
pub fn bin_dir() -> Option<PathBuf> {
    [
        "/usr/lib/postgresql/15/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/17/bin",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("initdb").exists())
}

/// A running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

fn as_server_user(bin: &Path, tool: &str, args: &[&str]) -> Command {
    let exe = bin.join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe).args(args);
        c
    } else {
        let mut c = Command::new(exe);
        c.args(args);
        c
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// Starts a new cluster, or `None` (with the reason printed) where PostgreSQL is not
    /// installed and the run is not CI (under `CI=1` that is a failure).
    pub fn start() -> Option<Cluster> {
        Cluster::start_with("")
    }

    /// [`Cluster::start`] with extra server settings (`-c name=value …`).
    pub fn start_with(settings: &str) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            skip_or_fail(
                "PostgreSQL",
                "server binaries not found (install postgresql-15)",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("sj-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success());
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap().to_string();
        let out = as_server_user(
            &bin,
            "initdb",
            &[
                "-D",
                &data_s,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Password authentication over TCP (for the password tests), trust on the socket.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let c = Cluster {
            dir,
            bin,
            port: free_port(),
        };
        c.start_server_with(settings);
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) {
        self.start_server_with("");
    }

    /// Stops the server (`-m fast`) and starts it again with `settings` (`-c name=value …`)
    /// after the test settings, which they override (e.g. `-c fsync=on` for a durable server).
    pub fn restart_with(&self, settings: &str) {
        let _ = as_server_user(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
        self.start_server_with(settings);
    }

    fn start_server_with(&self, settings: &str) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c max_connections=60 -c shared_buffers=32MB {settings}",
            self.port,
            self.socket_dir()
        );
        let log = self.dir.path().join("server.log");
        let out = as_server_user(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client().is_err() {
            assert!(
                Instant::now() < deadline,
                "the server does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pg_ctl stop -m immediate`: the server dies as in a crash.
    pub fn stop_immediate(&self) {
        let _ = as_server_user(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }

    /// Writes `bytes` to `name` in the data directory, owned by the server's user with mode
    /// 0600 (as the server demands of a TLS key), e.g. `server.crt` and `server.key` for
    /// `restart_with("-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key")`.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("data").join(name);
        std::fs::write(&path, bytes).expect("write into the data directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            let st = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&path)
                .status()
                .expect("chown");
            assert!(st.success());
        }
    }

    /// Reloads the configuration.
    pub fn reload(&self) {
        let _ = as_server_user(&self.bin, "pg_ctl", &["-D", &self.data(), "reload"])
            .stdout(Stdio::null())
            .status();
    }

    /// The connection string of database `db` through the socket, as user `user`.
    pub fn url_for(&self, db: &str, user: &str) -> String {
        self.server().url_for(db, user)
    }

    /// The server's address (what a connection, or a child process, needs to reach it).
    pub fn server(&self) -> Server {
        Server {
            socket_dir: self.socket_dir(),
            port: self.port,
        }
    }

    /// A connection as the superuser to the `postgres` database.
    pub fn client(&self) -> Result<postgres::Client, postgres::Error> {
        self.client_of("postgres")
    }

    /// A connection as the superuser to database `db`.
    pub fn client_of(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        self.server().client_of(db)
    }

    /// A new database named `name` with `schema` (SQL) run in it; returns its connection
    /// string.
    pub fn database(&self, name: &str, schema: &str) -> String {
        let mut c = self.client().expect("connect");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let mut d = self.client_of(name).expect("connect");
        d.batch_execute(schema).expect("schema");
        self.url_for(name, "postgres")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// Where a running server is: its socket directory and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    socket_dir: String,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

/// The environment variable that hands the shared server to a child process
/// (`<port>:<socket dir>`), so that the child does not start a cluster of its own.
pub const SHARED_SERVER_ENV: &str = "SYNCJOURNAL_TEST_PG_SERVER";

impl Server {
    /// The connection string of database `db` through the socket, as user `user`.
    pub fn url_for(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.socket_dir, self.port
        )
    }

    /// A connection as the superuser to database `db`.
    pub fn client_of(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        let mut c = postgres::Client::connect(&self.url_for(db, "postgres"), postgres::NoTls)?;
        c.batch_execute("SET synchronous_commit = local")?;
        Ok(c)
    }

    /// A connection as the superuser to the `postgres` database.
    pub fn client(&self) -> Result<postgres::Client, postgres::Error> {
        self.client_of("postgres")
    }

    /// Runs the client tool `tool` (`pg_dump`, `pg_restore`) of the server's installation
    /// against database `db` as the superuser, with `args`; panics if it fails.
    pub fn run_tool(&self, tool: &str, db: &str, args: &[&str]) {
        let bin = bin_dir().expect("the server binaries");
        let out = Command::new(bin.join(tool))
            .args(["-h", &self.socket_dir, "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} on {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The value of [`SHARED_SERVER_ENV`] that names this server.
    pub fn env_value(&self) -> String {
        format!("{}:{}", self.port, self.socket_dir)
    }

    fn from_env_value(v: &str) -> Option<Server> {
        let (port, dir) = v.split_once(':')?;
        Some(Server {
            socket_dir: dir.to_string(),
            port: port.parse().ok()?,
        })
    }
}

/// The cluster this test binary shares between its tests (started on first use, with room
/// for many connections), or the one a parent process named in [`SHARED_SERVER_ENV`]. `None`
/// where PostgreSQL is not installed and the run is not CI (see [`Cluster::start`]).
///
/// A watchdog (`setsid -f sh`, its output discarded) polls this process and, once it is gone,
/// stops the cluster (`-m immediate`) and removes its directory.
pub fn shared() -> Option<&'static Server> {
    static SHARED: OnceLock<Option<Server>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(v) = std::env::var_os(SHARED_SERVER_ENV) {
                let v = v.to_str().expect("utf-8 server address");
                return Some(Server::from_env_value(v).expect("a server address"));
            }
            let cluster = Cluster::start_with("-c max_connections=300")?;
            let server = cluster.server();
            let stop = as_server_user(
                &cluster.bin,
                "pg_ctl",
                &["-D", &cluster.data(), "-m", "immediate", "-w", "stop"],
            );
            let mut line = shell_words(&stop);
            line.push_str(&format!(
                "; rm -rf '{}'",
                cluster.dir.path().to_str().expect("utf-8 path")
            ));
            let script = format!(
                "while kill -0 {} 2>/dev/null; do sleep 0.3; done; {line}",
                std::process::id()
            );
            // `setsid -f` forks the watchdog off and returns at once.
            let st = Command::new("setsid")
                .args(["-f", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("start the cluster's watchdog");
            assert!(st.success(), "start the cluster's watchdog: {st}");
            // The watchdog owns the cluster from here: never stop it on drop.
            std::mem::forget(cluster);
            Some(server)
        })
        .as_ref()
}

/// `cmd` as a shell command line (its arguments single-quoted).
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_str().expect("utf-8 argument")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TCP forwarder on 127.0.0.1 to a server's port, that can take the server out of reach:
/// while down, every connection it has forwarded is cut and new ones are closed at once (the
/// client sees the connection fail, as when a server's network goes away).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

#[derive(Debug)]
struct ProxyState {
    up: AtomicBool,
    /// Both ends of every forwarded connection, to cut them.
    conns: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// A forwarder to `127.0.0.1:<upstream>`, up. Its thread ends soon after the proxy is
    /// dropped.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            up: AtomicBool::new(true),
            conns: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&state);
        let to = SocketAddr::from(([127, 0, 0, 1], upstream));
        std::thread::spawn(move || accept_loop(listener, weak, to));
        Proxy { port, state }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True while the server is in reach.
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::SeqCst)
    }

    /// Takes the server out of reach: cuts every forwarded connection, refuses new ones.
    pub fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Brings the server back in reach.
    pub fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, state: Weak<ProxyState>, to: SocketAddr) {
    loop {
        let Some(st) = state.upgrade() else { return };
        match listener.accept() {
            Ok((client, _)) => {
                if !st.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                // No Nagle delay on either leg: a forwarded message must not wait for an ACK.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let ends = [&client, &server].map(|s| s.try_clone().expect("clone a socket"));
                st.conns.lock().unwrap().extend(ends);
                pipe(&client, &server);
                pipe(&server, &client);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                drop(st);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone a socket"),
        to.try_clone().expect("clone a socket"),
    );
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
