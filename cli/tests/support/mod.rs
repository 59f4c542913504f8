//! Drives the real `tollgate` binary: starts `serve` on an ephemeral port (its address read from
//! the "listening on" line), sends raw HTTP/1.1 requests, and signals processes with `kill`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A `tollgate serve` child process.
pub struct Serve {
    child: Child,
    pub addr: String,
    /// Drains a piped stderr as the server writes it (a server blocks on a full pipe nobody
    /// reads: its access log is a line per request), handing the text back at the end.
    stderr: Option<std::thread::JoinHandle<String>>,
    /// A piped stderr deliberately never read (`start_with_stderr_unread`).
    unread: Option<std::process::ChildStderr>,
}

impl Serve {
    pub fn start(args: &[&str]) -> Serve {
        Serve::spawn(args, &[], Stdio::null())
    }

    /// As `start`, with these environment variables (`TOLLGATE_…` settings).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::spawn(args, env, Stdio::null())
    }

    /// As `start`, keeping stderr for [`terminate_with_stderr`](Self::terminate_with_stderr).
    pub fn start_with_stderr(args: &[&str]) -> Serve {
        Serve::spawn(args, &[], Stdio::piped())
    }

    /// As `start`, with stderr a pipe that nobody reads (a stalled log consumer: it fills
    /// after 64 KiB).
    pub fn start_with_stderr_unread(args: &[&str]) -> Serve {
        let mut serve = Serve::spawn_with(args, &[], Stdio::piped(), false);
        serve.unread = serve.child.stderr.take();
        serve
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Serve {
        Serve::spawn_with(args, env, stderr, true)
    }

    fn spawn_with(args: &[&str], env: &[(&str, &str)], stderr: Stdio, drain: bool) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tollgate serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let stderr = child.stderr.take_if(|_| drain).map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        });
        Serve {
            child,
            addr,
            stderr,
            unread: None,
        }
    }

    /// Starts reading the pipe `start_with_stderr_unread` left unread (the consumer resumes),
    /// so the server's own shutdown messages can be written.
    pub fn resume_stderr(&mut self) {
        if let Some(mut pipe) = self.unread.take() {
            self.stderr = Some(std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            }));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP and waits until the server counts its `count`-th reload with `result`
    /// (`"applied"` or `"rejected"`).
    pub fn reload(&self, result: &str, count: u32) {
        signal(self.child.id(), "HUP");
        let name = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
        wait_for(&format!("reload {count} {result}"), || {
            metric(&self.addr, &name) == f64::from(count)
        });
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM, waits for the exit, and returns what the server wrote on stderr (started
    /// with [`start_with_stderr`](Self::start_with_stderr)).
    pub fn terminate_with_stderr(mut self) -> (ExitStatus, String) {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        let stderr = self
            .stderr
            .take()
            .map(|drain| drain.join().unwrap())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with extra headers, on a new connection.
pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut stream = TcpStream::connect(addr).unwrap();
    // A server that hangs fails the test instead of hanging it (no test waits this long).
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Polls `condition` until it holds; panics after a generous timeout (a hang, not a speed test).
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A metric's value from `/metrics`.
pub fn metric(addr: &str, name: &str) -> f64 {
    let text = get(addr, "/metrics", &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}
