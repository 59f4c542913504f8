//! loom models of the pool supervisor's wake-up protocol (`src/pool/watch.rs`): a job start is
//! never missed by a supervisor that sleeps until its next due instant, and shutdown always
//! ends it. The supervisor loop below is `supervisor::watch`'s, with the lane scan reduced to
//! reading due instants; the alarm, the slots and the clock park are the crate's own code
//! (`tollgate::pool_watch` exists only in loom builds, so this file is empty without loom —
//! `tests/pool_supervision.rs` covers the pool on real threads).
//!
//! Mutants that fail these models (tried by hand, each reverted): `Alarm::start` ringing before
//! it publishes the job (deadlock in the first model: the ring finds no supervisor registered
//! yet, or the scan misses the job), `Alarm::scan_begins` not storing `u64::MAX` before its
//! scan (deadlock in the first model, which needs three preemptions for it: the start reads the
//! previous scan's earlier plan and does not ring), and `Alarm::stop` not unparking (deadlock
//! in the last model).
#![cfg(loom)]

use loom_tests::{Arc, model, thread};
use tollgate::pool_watch::{Alarm, Slot};
use tollgate::time::{Clock, ManualClock};

/// A job as the model's lanes hold it: the instant it could stall.
type Due = u64;

/// `supervisor::watch` over `lanes`: scans (earliest due instant), sleeps until it on `clock`,
/// scans again when woken. Returns once a scan sees `until` hold, or `None` if stopped.
fn supervise(
    alarm: &Alarm,
    clock: &ManualClock,
    lanes: &[Slot<Due>],
    until: impl Fn(&[Option<Due>]) -> bool,
) -> Option<usize> {
    alarm.register();
    let mut scans = 0;
    while alarm.scan_begins() {
        scans += 1;
        let seen: Vec<Option<Due>> = lanes.iter().map(|lane| lane.with(|job| *job)).collect();
        if until(&seen) {
            return Some(scans);
        }
        let next = seen.iter().flatten().copied().min().unwrap_or(u64::MAX);
        if !alarm.scan_ends(next) {
            return None;
        }
        clock.park_thread_until(next);
    }
    None
}

/// A job that starts while the supervisor registers, scans or sleeps until a later job's due
/// instant is always seen: the supervisor scans again before that later instant (the clock is
/// never advanced past 3, so a lost wake-up is a deadlock loom reports).
#[test]
fn a_job_start_is_never_missed_by_a_sleeping_supervisor() {
    // Three preemptions: the stale-plan race (a start reading the plan of the scan before)
    // needs the supervisor preempted once at spawn, once mid-scan and the starter once.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(3).max(3));
    builder.check(|| {
        let alarm = Arc::new(Alarm::new());
        let clock = ManualClock::new();
        // Lane 0: a job due at 3 that ends; lane 1: a long job due at 100; lane 2: the new job.
        let lanes: Arc<[Slot<Due>; 3]> = Arc::new([Slot::new(), Slot::new(), Slot::new()]);
        lanes[0].with(|job| *job = Some(3));
        lanes[1].with(|job| *job = Some(100));
        let supervisor = {
            let (alarm, clock, lanes) = (alarm.clone(), clock.clone(), lanes.clone());
            thread::spawn(move || supervise(&alarm, &clock, &*lanes, |seen| seen[2].is_some()))
        };
        // The job due at 3 ends and its instant passes (the supervisor wakes, finds nothing
        // due before 100), then a job due at 5 starts.
        lanes[0].with(|job| *job = None);
        clock.set(3);
        alarm.start(&lanes[2], 5, 5);
        assert!(supervisor.join().unwrap().is_some());
    });
}

/// Two job starts racing each other and the supervisor: both are seen before the supervisor
/// sleeps past either (here: past 100, which the clock never reaches).
#[test]
fn two_racing_starts_are_both_seen() {
    model(|| {
        let alarm = Arc::new(Alarm::new());
        let clock = ManualClock::new();
        let lanes: Arc<[Slot<Due>; 3]> = Arc::new([Slot::new(), Slot::new(), Slot::new()]);
        lanes[0].with(|job| *job = Some(100));
        let supervisor = {
            let (alarm, clock, lanes) = (alarm.clone(), clock.clone(), lanes.clone());
            thread::spawn(move || {
                supervise(&alarm, &clock, &*lanes, |seen| {
                    seen[1].is_some() && seen[2].is_some()
                })
            })
        };
        let other = {
            let (alarm, lanes) = (alarm.clone(), lanes.clone());
            thread::spawn(move || alarm.start(&lanes[1], 7, 7))
        };
        alarm.start(&lanes[2], 5, 5);
        other.join().unwrap();
        // The supervisor may plan to wake at 5 having seen only the job due at 5 (the one due
        // at 7 then does not ring: 7 > 5); time reaching 5 wakes it to see the other.
        clock.set(5);
        assert!(supervisor.join().unwrap().is_some());
    });
}

/// Shutdown racing the supervisor's registration, scan or sleep always ends it.
#[test]
fn stop_always_ends_the_supervisor() {
    model(|| {
        let alarm = Arc::new(Alarm::new());
        let clock = ManualClock::new();
        let lanes: Arc<[Slot<Due>; 1]> = Arc::new([Slot::new()]);
        lanes[0].with(|job| *job = Some(100));
        let supervisor = {
            let (alarm, clock, lanes) = (alarm.clone(), clock.clone(), lanes.clone());
            thread::spawn(move || supervise(&alarm, &clock, &*lanes, |_| false))
        };
        alarm.stop();
        assert_eq!(supervisor.join().unwrap(), None);
    });
}
