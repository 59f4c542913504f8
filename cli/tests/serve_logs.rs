//! `serve`'s logs through the real binary: with `--log-format json` every access line is a
//! JSON object with the request's status and latency, the client key is digested, a valid
//! `traceparent` is logged and a forged one is not; `-q` silences the log.

mod support;

use support::{Serve, get};

/// The stderr lines that are access-log records, parsed (each must parse).
fn access_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|line| line.contains("tollgate::access"))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

#[test]
fn every_json_access_line_parses_with_status_and_latency() {
    let server = Serve::start_with_stderr(&[
        "--log-format",
        "json",
        "--rate",
        "1",
        "--burst",
        "1",
        "--per-minute",
        "1", // a loaded machine taking > 1 s between requests still sees the 429
        "--missing-id",
        "7",
    ]);
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let statuses = [
        get(&server.addr, "/ping", &[("traceparent", trace)]).status,
        get(
            &server.addr,
            "/users/7/widgets",
            &[("traceparent", "00-forged\n{\"x\":1}")],
        )
        .status,
        get(&server.addr, "/users/8/widgets", &[]).status, // the burst of 1 went to /ping: 429
        get(&server.addr, "/nowhere/\u{1b}[31mred", &[]).status,
    ];
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success(), "{stderr}");
    // Every request has its line, those the HTTP layer refused before the handler too (the
    // forged header's line break and the raw escape make malformed heads: 400).
    let lines = access_lines(&stderr);
    assert_eq!(lines.len(), statuses.len(), "{stderr}");
    for (line, status) in lines.iter().zip(statuses) {
        assert_eq!(line["status"].as_u64(), Some(u64::from(status)), "{line}");
        assert!(line["latency_us"].is_u64(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["message"], "access", "{line}");
    }
    assert_eq!(lines[0]["path"], "/ping");
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[0]["parent_id"], "00f067aa0ba902b7");
    assert_eq!(lines[0]["source"], "memory");
    assert_eq!(lines[0]["rule"], "default");
    assert!(lines[0]["client"].as_str().is_some_and(|c| c.len() == 16));
    assert_eq!(lines[1]["status"], 400, "the forged header breaks the head");
    assert_eq!(lines[1]["trace_id"], "-");
    assert!(
        !stderr.contains("forged"),
        "client bytes of a refused head stay out of the log"
    );
    assert_eq!(lines[2]["status"], 429);
    let refused_by = lines[2]["refused_by"].as_str().unwrap();
    assert!(
        ["per-second", "per-minute"].contains(&refused_by),
        "{refused_by}"
    );
    // One client (one address): one digest, and not the key itself.
    assert_eq!(lines[0]["client"], lines[2]["client"]);
    assert!(!stderr.contains("ip:127.0.0.1"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no raw escape reaches the log");
}

#[test]
fn quiet_serves_without_an_access_log() {
    let server = Serve::start_with_stderr(&["-q"]);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 200);
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success());
    assert!(access_lines(&stderr).is_empty(), "{stderr}");
}

#[test]
fn metrics_have_a_request_latency_histogram() {
    let server = Serve::start(&[]);
    for _ in 0..3 {
        assert_eq!(get(&server.addr, "/ping", &[]).status, 200);
    }
    let text = get(&server.addr, "/metrics", &[]).body;
    assert!(
        text.contains("# TYPE tollgate_request_duration_seconds histogram\n"),
        "{text}"
    );
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    };
    // The three pings; this scrape is timed after it renders.
    assert_eq!(value("tollgate_request_duration_seconds_count "), 3);
    assert_eq!(
        value("tollgate_request_duration_seconds_bucket{le=\"+Inf\"} "),
        3
    );
    let mut last = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("tollgate_request_duration_seconds_bucket"))
    {
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= last, "cumulative: {text}");
        last = n;
    }
}

/// A stderr nobody reads (a stalled log consumer) never stalls the server: past the log
/// writer's bounded queue, access lines are dropped and counted, and every request is still
/// answered. Before the non-blocking writer, the event loop blocked on the full pipe after
/// some 250 access lines and this test's requests timed out.
#[test]
fn a_stderr_nobody_reads_never_stalls_the_server() {
    let mut server = Serve::start_with_stderr_unread(&["--log-format", "json"]);
    // ~25,000 access lines of ~250 bytes: far past a 64 KiB pipe plus the writer's queue.
    for i in 0..25_000 {
        let answer = get(&server.addr, "/ping", &[]);
        assert_eq!(answer.status, 200, "request {i}");
    }
    let dropped = support::metric(&server.addr, "tollgate_log_lines_dropped_total");
    assert!(dropped > 0.0, "the queue must have overflowed: {dropped}");
    // The consumer resumes: the queued lines and the shutdown messages get out, and the server
    // exits as usual.
    server.resume_stderr();
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}
