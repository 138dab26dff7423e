//! A throwaway PostgreSQL 15 cluster for a test: `initdb` in a temporary directory (run as the
//! unprivileged `postgres` user when the tests run as root: `initdb` refuses root), a unix
//! socket in that directory and a free 127.0.0.1 port; stopped (`-m immediate`) and removed on
//! drop, also when the test panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
        c.start_server();
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
        format!(
            "host={} port={} user={user} dbname={db}",
            self.socket_dir(),
            self.port
        )
    }

    /// A connection as the superuser to the `postgres` database.
    pub fn client(&self) -> Result<postgres::Client, postgres::Error> {
        self.client_of("postgres")
    }

    /// A connection as the superuser to database `db`.
    pub fn client_of(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        let mut c = postgres::Client::connect(&self.url_for(db, "postgres"), postgres::NoTls)?;
        c.batch_execute("SET synchronous_commit = local")?;
        Ok(c)
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
