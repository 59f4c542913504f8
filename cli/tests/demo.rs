//! `tollgate demo` runs end to end (fast settings) and prints its summary and fail-fast round.

use std::process::Command;

#[test]
fn demo_prints_a_summary_and_a_fail_fast_round() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "demo",
            "--keys",
            "30",
            "--rate",
            "200",
            "--burst",
            "10",
            "--latency-ms",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "requests",
        "achieved rate",
        "max in flight",
        "as counted by the server",
        "latency p50 / p99",
        "429s / retries",
        "fail-fast round",
        "key 13",
        "error id",
        "stopped after",
    ] {
        assert!(stdout.contains(needle), "{needle} missing in:\n{stdout}");
    }
}

/// `--rate` takes quota text as `fetch --rate` does; a bad one is a usage error (exit 2).
#[test]
fn demo_takes_quota_text_and_rejects_a_bad_rate() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "demo",
            "--keys",
            "12",
            "--rate",
            "12000/min:10",
            "--latency-ms",
            "1",
            "--no-fail-fast-round",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("at 200/s:10 (burst 10)"),
        "the quota as understood:\n{stdout}"
    );
    assert!(stdout.contains("the law allows 10 + 200·t"), "{stdout}");

    for bad in ["0/s", "ten/s", "10/fortnight"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["demo", "--rate", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--rate {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--rate"), "--rate {bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "--rate {bad}: {stderr}");
    }
}
