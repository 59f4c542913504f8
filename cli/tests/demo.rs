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
