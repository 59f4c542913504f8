//! A throwaway `redis-server` for tests: its own loopback port, its own temp dir, no persistence,
//! killed on drop. Used by the library's unit tests (`tollgate::redis`), `tests/redis.rs`,
//! `tests/redis_cluster.rs`, `tests/http_limit_redis.rs`, the CLI's `serve_redis` tests and the
//! Redis bench examples; it uses nothing but std and the `redis` crate.
//!
//! When `redis-server` is not on `PATH`, [`TestServer::start`] prints a loud skip notice and
//! returns `None` — unless `TOLLGATE_REQUIRE_REDIS=1`, which turns the skip into a failure (CI).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `redis-server` owned by one test.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl TestServer {
    /// Starts a server, or `None` (after a loud notice) when `redis-server` is not installed.
    pub fn start() -> Option<TestServer> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--maxmemory 1mb`).
    pub fn start_with(extra: &[&str]) -> Option<TestServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var("TOLLGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("redis-server not installed, and TOLLGATE_REQUIRE_REDIS=1");
            }
            // Straight to file descriptor 2: libtest captures the output of passing tests, and a
            // skip must be seen.
            let notice = "\n*** SKIPPED: redis-server not installed (set TOLLGATE_REQUIRE_REDIS=1 to fail instead) ***\n";
            match std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/fd/2")
            {
                Ok(mut stderr) => {
                    let _ = stderr.write_all(notice.as_bytes());
                }
                Err(_) => eprintln!("{notice}"),
            }
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = TestServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        // Wait for the server's own "ready" line instead of polling the port, then keep draining
        // its log so it never blocks on a full pipe.
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("Ready to accept connections") {
                ready = true;
                break;
            }
        }
        assert!(ready, "redis-server on port {} did not start", self.port);
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A plain connection with a 2 s timeout.
    pub fn connection(&self) -> ::redis::Connection {
        let client = ::redis::Client::open(self.url()).expect("client");
        client
            .get_connection_with_timeout(std::time::Duration::from_secs(2))
            .expect("connect to the test server")
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGSTOP: the server stops answering but keeps its sockets (a "slow" Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL: the server is gone (a "down" Redis).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process ignores nothing but SIGKILL; resume it anyway so it exits cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
