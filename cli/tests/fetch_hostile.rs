//! `tollgate fetch` end to end against the hostile test server (`tollgate_testkit::http`, two
//! loopback listeners being two origins): redirects never leak, hostile answers end with the
//! documented error and exit code, piped input is streamed in bounded memory, body files never
//! merge or get overwritten, lines are on disk as each key completes, secrets are never printed,
//! and a closed stdout ends the run with exit 0. Behaviour only: the time bounds asserted are
//! hang checks, many times the timeouts involved.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{BIN, signal, wait_for};
use tollgate_testkit::http::{self as server, TestServer};

const SECRET: &str = "s3cret-api-key";
const PASSWORD: &str = "hunter2";
/// A hang check: no case here should come near it.
const HANG: Duration = Duration::from_secs(60);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    lines: Vec<Value>,
}

fn fetch(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("fetch")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        started.elapsed() < HANG,
        "{args:?} took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(SECRET), "secret printed: {text}");
        assert!(!text.contains(PASSWORD), "password printed: {text}");
    }
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    Run {
        code: out.status.code(),
        stdout,
        stderr,
        lines,
    }
}

/// Percent-encodes a URL for a query value.
fn encode(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(name: &str) -> String {
    server::percent_decode(name)
}

#[test]
fn cross_origin_redirects_never_carry_headers_or_credentials() {
    let home = TestServer::start();
    let elsewhere = TestServer::start();
    let to = encode(&elsewhere.url("/ok/leak"));
    // A credential in the query string is never printed either.
    let url = home
        .url(&format!("/redirect/302/{{key}}?to={to}&sig={SECRET}"))
        .replacen("http://", &format!("http://me:{PASSWORD}@"), 1);
    let header = format!("X-API-Key: {SECRET}");
    // Default policy: refused, exit 1, nothing reaches the other origin.
    let run = fetch(&["--url", &url, "-H", &header, "-q", "k"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("another origin")
    );
    assert_eq!(elsewhere.hits("leak"), 0);
    // follow-stripped: followed, without the header or the credentials; the final URL reported.
    let run = fetch(&[
        "--url",
        &url,
        "-H",
        &header,
        "--redirects",
        "follow-stripped",
        "-q",
        "k",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.lines[0]["url"], elsewhere.url("/ok/leak"));
    let seen = &elsewhere.headers_of("leak")[0];
    assert!(
        !seen
            .iter()
            .any(|(n, _)| n == "x-api-key" || n == "authorization")
    );
    // none: the redirect is the answer.
    let run = fetch(&["--url", &url, "--redirects", "none", "-q", "k"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.lines[0]["status"], 302);
}

#[test]
fn hostile_answers_end_with_their_documented_errors() {
    let server = TestServer::start();
    // (path, extra flags, what the key's error says)
    let cases: &[(&str, &[&str], &str)] = &[
        ("/hang/{key}", &["--timeout", "500ms"], "timed out"),
        ("/trickle/100/{key}", &["--timeout", "300ms"], "timed out"),
        ("/reset/{key}", &[], "connection"),
        ("/lie/2147483648/{key}", &[], "body larger than"),
        ("/badchunk/{key}", &[], ""),
        ("/badheader/{key}", &[], ""),
        ("/badstatus/{key}", &[], ""),
        ("/loop/{key}", &[], "more than 10 redirects"),
        ("/redirect/302/{key}?to=ftp%3A%2F%2Fx", &[], "Location"),
        (
            "/status/429/{key}?retry-after=99999999999",
            &["--timeout", "1s"],
            "429",
        ),
        ("/status/503/{key}?retry-after=%FF%FE", &[], "503"),
    ];
    for (path, extra, needle) in cases {
        let url = server.url(path);
        let mut args = vec!["--url", &url, "--retries", "1", "-q", "k"];
        args.extend_from_slice(extra);
        let run = fetch(&args);
        assert_eq!(run.code, Some(1), "{path}: {}", run.stderr);
        assert_eq!(run.lines.len(), 1, "{path}: {}", run.stdout);
        let error = run.lines[0]["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && error.to_lowercase().contains(&needle.to_lowercase()),
            "{path}: {error}"
        );
        assert!(run.stderr.contains("error:"), "{path}: {}", run.stderr);
    }
}

#[test]
fn a_servers_pause_is_capped_and_no_fail_fast_ends() {
    let server = TestServer::start();
    // 20 hostile keys asking for a pause of 3000 years, --no-fail-fast: every pause is capped by
    // --timeout (1 s), so the run ends (it took over 400 s on main with 50 keys).
    let url = server.url("/status/429/{key}?retry-after=99999999999");
    let run = fetch(&[
        "--url",
        &url,
        "--rate",
        "100/s",
        "--timeout",
        "1s",
        "--retries",
        "1",
        "--no-fail-fast",
        "-q",
        "1..=20",
    ]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.lines.len(), 20);
    assert!(
        run.stderr.contains("20 keys failed in all"),
        "{}",
        run.stderr
    );
    // --max-retry-after caps it further; --deadline bounds the whole run.
    let run = fetch(&[
        "--url",
        &url,
        "--max-retry-after",
        "100ms",
        "--deadline",
        "2s",
        "--no-fail-fast",
        "-q",
        "1..=1000000",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("--deadline passed"), "{}", run.stderr);
}

/// A process's resident set and its peak, in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[test]
fn huge_piped_input_is_streamed_in_bounded_memory() {
    let server = TestServer::start();
    let mut child = Command::new(BIN)
        .args([
            "fetch",
            "--url",
            &server.url("/ok/{key}"),
            "-q",
            "-o",
            "/dev/null",
        ])
        .args(["--no-fail-fast", "--max-in-flight", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // `yes 1`: keys for ever, as fast as the pipe takes them (until the child goes).
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = "1\n".repeat(32 * 1024);
        let mut written: u64 = 0;
        while stdin.write_all(chunk.as_bytes()).is_ok() {
            written += chunk.len() as u64;
        }
        written
    });
    // Requests flow while input keeps coming (main read all of stdin first and sent nothing).
    assert!(
        server.wait_for(HANG, |c| c.requests >= 2_000),
        "no requests flowed"
    );
    let (_, peak) = rss_kib(pid).expect("/proc");
    assert!(server.wait_for(HANG, |c| c.requests >= 4_000));
    let (rss, peak_later) = rss_kib(pid).expect("/proc");
    signal(pid, "TERM");
    let status = child.wait().unwrap();
    let written = writer.join().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    // Bounded: tens of MiB at most whatever was piped, and no growth between the two samples
    // beyond noise (2,000 more keys went through).
    assert!(
        peak_later < 64 * 1024,
        "peak RSS {peak_later} KiB, {written} bytes piped"
    );
    assert!(rss < 64 * 1024);
    assert!(
        peak_later < peak + 8 * 1024,
        "grew from {peak} to {peak_later} KiB"
    );
}

#[test]
fn body_files_never_merge_and_map_back_to_their_keys() {
    let server = TestServer::start();
    let dir = std::env::temp_dir().join(format!("tollgate-bodies-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let long = "k".repeat(300);
    let keys = [
        "a/b",
        "A/b", // a case-insensitive file system must not merge it with "a/b"
        "a_b",
        "a b",
        "a?b",
        "é",
        "ü",
        "..",
        ".hidden",
        "%41",
        long.as_str(),
    ];
    let url = server.url("/ok/{key}");
    let dir_arg = dir.to_str().unwrap();
    let mut args = vec!["--url", &url, "--output-dir", dir_arg, "-q"];
    args.extend(keys);
    let run = fetch(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.lines.len(), keys.len());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), keys.len(), "one file per key");
    for line in &run.lines {
        let key = line["key"].as_str().unwrap();
        let file = std::path::PathBuf::from(line["file"].as_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            key,
            "the file holds its key's body"
        );
        let name = file.file_name().unwrap().to_str().unwrap();
        if key.len() < 100 {
            assert_eq!(percent_decode(name), key, "{name} maps back to its key");
            // Outside its `%XX` escapes a name has no upper case: names of two keys never
            // differ only in case (one file on macOS or Windows).
            let bytes = name.as_bytes();
            let (mut i, mut literal) = (0, String::new());
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    i += 3;
                } else {
                    literal.push(char::from(bytes[i]));
                    i += 1;
                }
            }
            assert!(
                !literal.chars().any(|c| c.is_ascii_uppercase()),
                "{name}: upper case outside escapes"
            );
        } else {
            assert!(name.len() <= 200 && name.contains('~'), "{name}");
        }
    }
    // Again: every file exists, so every key fails (nothing overwritten); with --overwrite, fine.
    let run = fetch(&args);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.lines.len(),
        1,
        "fail-fast stops at the first file error"
    );
    assert!(
        run.lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("not overwritten")
    );
    args.push("--no-fail-fast");
    let run = fetch(&args);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.lines.len(),
        keys.len(),
        "a file error is that key's, not the run's"
    );
    assert!(run.stderr.contains("keys failed in all"), "{}", run.stderr);
    args.push("--overwrite");
    assert_eq!(fetch(&args).code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_line_is_on_disk_when_its_key_completes() {
    let server = TestServer::start();
    let out = std::env::temp_dir().join(format!("tollgate-lines-{}.jsonl", std::process::id()));
    // Key 0 answers at once; key 600000 after ten minutes.
    let mut child = Command::new(BIN)
        .args([
            "fetch",
            "--url",
            &server.url("/slow/{key}/k"),
            "-q",
            "--timeout",
            "10m",
        ])
        .args(["-o", out.to_str().unwrap(), "0", "600000"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first line on disk", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n'))
    });
    // SIGKILL: no chance to flush anything more. The line was already whole on disk.
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["key"], "0");
    assert_eq!(line["status"], 200);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn a_closed_stdout_ends_fetch_and_demo_with_exit_zero() {
    let server = TestServer::start();
    for args in [
        vec![
            "fetch",
            "--url",
            &server.url("/ok/{key}"),
            "-q",
            "1..=1000000",
        ],
        vec!["demo"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader has gone (`| head -1`).
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn methods_bodies_rates_summary_and_exact_counts() {
    let server = TestServer::start();
    let url = server.url("/echo/{key}");
    let summary =
        std::env::temp_dir().join(format!("tollgate-summary-{}.json", std::process::id()));
    let run = fetch(&[
        "--url",
        &url,
        "-X",
        "PUT",
        "-d",
        "hello",
        "--body",
        "--rate",
        "100/min:5",
        "--timeout",
        "1m30s",
        "--summary-json",
        summary.to_str().unwrap(),
        "-q",
        "a",
        "b",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.lines.iter().all(|l| l["body"] == "hello"));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["succeeded"], 2);
    assert_eq!(s["keys_total"], "2");
    assert_eq!(s["exit_code"], 0);
    let _ = std::fs::remove_file(&summary);
    // Bad rates and durations are usage errors with a clear message.
    for (flag, value, needle) in [
        ("--rate", "10/fortnight", "not a rate"),
        ("--rate", "0/s", "rate"),
        ("--timeout", "5 parsecs", "unknown unit"),
        ("--timeout", "0s", "more than zero"),
        ("--max-in-flight", "20000", "at most 1024"),
        ("--workers", "20000", "at most 1024"),
    ] {
        let run = fetch(&["--url", &url, flag, value, "k"]);
        assert_eq!(run.code, Some(2), "{flag} {value}");
        assert!(
            run.stderr.contains(needle),
            "{flag} {value}: {}",
            run.stderr
        );
    }
    let run = fetch(&["--url", &url, "--data-file", "-", "--keys-file", "-"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("cannot share stdin"), "{}", run.stderr);
    // The whole u64 range is 2^64 keys, counted exactly.
    let run = fetch(&[
        "--url",
        &server.url("/ok/{key}"),
        "--deadline",
        "300ms",
        "-q",
        "-o",
        "/dev/null",
        "0..=18446744073709551615",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("of 18446744073709551616 keys"),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_and_man_page() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("tollgate"));
    }
}

#[test]
fn ctrl_c_ends_a_run_waiting_on_idle_input() {
    let server = TestServer::start();
    let mut child = Command::new(BIN)
        .args(["fetch", "--url", &server.url("/ok/{key}"), "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One key, then the input stays open and idle (`tail -f keys | tollgate fetch …`).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    wait_for("the first key's request", || server.hits("first") == 1);
    signal(child.id(), "INT");
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < HANG);
    assert_eq!(status.code(), Some(130));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("\"key\":\"first\""), "{stdout}");
    drop(stdin);
}

/// Keys from a pipe that stays open and idle: each key's line is written as it completes, not
/// when the next line of input comes, and a failure ends a fail-fast run (exit 1) while the
/// input is still open.
#[test]
fn an_idle_input_holds_up_neither_results_nor_a_failure() {
    let server = TestServer::start();
    let mut child = Command::new(BIN)
        .args(["fetch", "--url", &server.url("/status/{key}/k"), "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Lines as they come, read on a thread so that a missing line fails instead of hanging.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    stdin.write_all(b"200\n").unwrap();
    stdin.flush().unwrap();
    // The input is open and idle now: the line must come anyway.
    let line = lines
        .recv_timeout(HANG)
        .expect("the first key's line while the input is idle");
    let first: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&first["key"], &first["status"]),
        (&"200".into(), &200.into())
    );

    stdin.write_all(b"500\n").unwrap();
    stdin.flush().unwrap();
    // Still open: the failure alone must end the run.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < HANG,
            "fetch still runs on an idle input after a failure"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
    let line = lines.recv_timeout(HANG).expect("the failed key's line");
    let failed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&failed["key"], &failed["status"]),
        (&"500".into(), &500.into())
    );
    reader.join().unwrap();
    drop(stdin);
}
