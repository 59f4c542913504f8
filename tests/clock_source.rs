//! Which source `MonotonicClock` reads, tested in child processes (the choice is made once per
//! process, at the first reading): `TOLLGATE_CLOCK=std` forces `Instant`, and without it the
//! counter is used exactly where the kernel's clocksource is that counter.

use std::process::Command;

use tollgate::time::{ClockSource, MonotonicClock};

/// Set in the child processes this file spawns: which source the child must see.
const EXPECT: &str = "TOLLGATE_TEST_EXPECT_SOURCE";

/// Runs this test binary's `test` alone in a child process with `env`, and asserts it passed.
fn in_child(test: &str, env: &[(&str, &str)]) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (key, value) in env {
        child.env(key, value);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the test (a filter that matched nothing would also "succeed").
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
}

/// What the child checks: the source it was told to expect, and that time never goes back on
/// it and moves forward.
fn check_child(expected: &str) {
    let want = match expected {
        "std" => ClockSource::Std,
        "counter" => ClockSource::Counter,
        other => panic!("unknown source {other}"),
    };
    assert_eq!(MonotonicClock::source(), want);
    let clock = MonotonicClock;
    let start = tollgate::time::Clock::now(&clock);
    let mut last = start;
    for _ in 0..100_000 {
        let now = tollgate::time::Clock::now(&clock);
        assert!(now >= last);
        last = now;
    }
    let at = last + 1_000_000;
    let wake = tollgate::CancelToken::never().park_until(&clock, at);
    assert_eq!(wake, tollgate::time::Wake::Reached);
    assert!(tollgate::time::Clock::now(&clock) >= at);
}

#[test]
fn tollgate_clock_std_forces_instant() {
    if let Ok(expected) = std::env::var(EXPECT) {
        check_child(&expected);
        return;
    }
    in_child(
        "tollgate_clock_std_forces_instant",
        &[("TOLLGATE_CLOCK", "std"), (EXPECT, "std")],
    );
}

#[test]
fn the_counter_is_used_where_the_kernel_uses_it() {
    if let Ok(expected) = std::env::var(EXPECT) {
        check_child(&expected);
        return;
    }
    let kernel =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    let counter = match kernel.trim() {
        "tsc" => cfg!(target_arch = "x86_64"),
        "arch_sys_counter" => cfg!(target_arch = "aarch64"),
        _ => false,
    };
    let expected = if counter && cfg!(feature = "quanta") && cfg!(target_os = "linux") {
        "counter"
    } else {
        "std"
    };
    eprintln!(
        "kernel clocksource `{}`: expecting `{expected}`",
        kernel.trim()
    );
    in_child(
        "the_counter_is_used_where_the_kernel_uses_it",
        &[(EXPECT, expected)],
    );
}
