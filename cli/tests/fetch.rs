//! `tollgate fetch` end to end against `tollgate serve`: output, exit codes, fail-fast, Ctrl-C.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{BIN, Serve, signal, wait_for};

fn fetch(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("fetch")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn every_key_is_fetched_as_a_json_line() {
    let server = Serve::start(&[]);
    let url = server.url("/users/{key}/widgets");
    let out = fetch(&[
        "--url", &url, "1..=20", "extra", "--rate", "1000", "--quiet",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = lines(&out.stdout);
    assert_eq!(records.len(), 21);
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    let mut expected: Vec<String> = (1..=20)
        .map(|k| k.to_string())
        .chain(["extra".into()])
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    for r in &records {
        assert_eq!(r["status"], 200);
        assert_eq!(r["attempts"], 1);
        assert!(r["bytes"].as_u64().unwrap() > 0);
        assert!(r["latency_ms"].as_f64().is_some());
    }
}

#[test]
fn keys_come_from_stdin_and_bodies_go_to_a_directory() {
    let server = Serve::start(&[]);
    let dir = std::env::temp_dir().join(format!("tollgate-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(BIN)
        .args([
            "fetch",
            "--url",
            &server.url("/users/{key}/widgets"),
            "--output-dir",
        ])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a\n# comment\n\nb\nc/d\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out.stdout).len(), 3);
    let body = std::fs::read_to_string(dir.join("a")).unwrap();
    assert!(body.contains("\"user\":\"a\""));
    assert!(dir.join("c%2Fd").exists(), "percent-encoded, reversible");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_key_stops_the_run_and_exits_one_naming_key_and_id() {
    let server = Serve::start(&["--missing-id", "7"]);
    let out = fetch(&[
        "--url",
        &server.url("/users/{key}/widgets"),
        "1..=50",
        "--max-in-flight",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key 7"), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(stderr.contains("error id"), "{stderr}");
    let records = lines(&out.stdout);
    assert!(records.len() < 50, "fail-fast stopped the run early");
    let failed: Vec<_> = records.iter().filter(|r| r["status"] == 404).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["key"], "7");
    assert!(failed[0]["error_id"].as_str().is_some());
}

#[test]
fn no_fail_fast_tries_every_key() {
    let server = Serve::start(&["--missing-id", "7", "--missing-id", "9"]);
    let out = fetch(&[
        "--url",
        &server.url("/users/{key}/widgets"),
        "1..=20",
        "--no-fail-fast",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let records = lines(&out.stdout);
    assert_eq!(records.len(), 20);
    assert_eq!(records.iter().filter(|r| r["status"] == 404).count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 keys failed"));
}

#[test]
fn transient_failures_are_retried_and_counted() {
    let server = Serve::start(&["--error-rate", "1"]);
    let out = fetch(&[
        "--url",
        &server.url("/users/{key}/widgets"),
        "1",
        "--retries",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let records = lines(&out.stdout);
    assert_eq!(records[0]["status"], 500);
    assert_eq!(records[0]["attempts"], 3);
}

#[test]
fn sigint_stops_promptly_with_valid_partial_output() {
    let server = Serve::start(&["--latency-ms", "100"]);
    let file = std::env::temp_dir().join(format!("tollgate-sigint-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut child = Command::new(BIN)
        .args([
            "fetch",
            "--url",
            &server.url("/users/{key}/widgets"),
            "1..=100000",
        ])
        .args(["--max-in-flight", "4", "--output"])
        .arg(&file)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines are flushed at the end; wait for requests to be in flight instead.
    wait_for("requests in flight", || {
        support::metric(&server.addr, "tollgate_requests_total") >= 8.0
    });
    signal(child.id(), "INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let text = std::fs::read_to_string(&file).unwrap();
    let records = lines(text.as_bytes());
    assert!(!records.is_empty() && records.len() < 100_000);
    assert!(records.iter().all(|r| r["status"] == 200));
    let _ = std::fs::remove_file(&file);
}

#[test]
fn bad_usage_exits_two_with_a_clear_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["--url", "http://127.0.0.1:9/users", "1"], "{key}"),
        (&["--url", "not a url {key}", "1"], "--url"),
        (
            &[
                "--url",
                "http://127.0.0.1:9/{key}",
                "--keys-file",
                "/nonexistent/keys",
            ],
            "cannot read keys file",
        ),
        (&["--url", "http://127.0.0.1:9/{key}"], "no keys"),
        (&["--url", "http://127.0.0.1:9/{key}", "5..=1"], "empty"),
        (
            &[
                "--url",
                "http://127.0.0.1:9/{key}",
                "1",
                "--header",
                "novalue",
            ],
            "header",
        ),
        (
            &[
                "--url",
                "http://127.0.0.1:9/{key}",
                "1",
                "--max-in-flight",
                "x",
            ],
            "max-in-flight",
        ),
    ];
    for (args, needle) in cases {
        let out = fetch(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
