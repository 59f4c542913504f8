//! loom models of the fan-out's caller wake-up (`src/fanout/nudge.rs`, `run.rs` invariant 6):
//! runners send outcomes and report them to the `Nudge`; the caller drains, lingers after
//! receiving, and otherwise sleeps. Claims: no outcome is left in the channel while the caller
//! sleeps (a lost wake-up), the last outcome and a failure always wake the caller, and a runner
//! that leaves wakes it. `tollgate::fanout_nudge` exists only in loom builds, so this file is
//! empty without loom — `tests/fanout.rs` and `tests/fanout_http.rs` run the fan-out on real
//! threads, and `src/fanout/nudge.rs` has a sequential proptest of the decision.
//!
//! Under loom a timed park is an untimed one (there is no time), so a caller that *sleeps*
//! ([`Nudge::sleep`], up to a heartbeat in the real run) stays parked until something unparks it:
//! if the protocol let an outcome sit unannounced while the caller slept, loom reports the model
//! deadlocked. A *linger* is a park whose timeout the real run relies on; the models that need
//! it to end by itself model its timeout as a yield.
//!
//! Mutants that fail these models (tried by hand, each reverted; loom reports the caller
//! deadlocked): `after_outcome` ignoring the asleep bit (`no_outcome_waits_while_the_caller_sleeps`
//! and `one_runner_two_outcomes_reach_a_sleeping_caller`); `try_sleep` setting the bit without
//! comparing the count with what was received (`one_runner_two_outcomes_reach_a_sleeping_caller`,
//! found with `LOOM_MAX_PREEMPTIONS=3`, not 2; all five models pass at 3 in ~5 s); `must_nudge`
//! without `urgent` (`a_failure_wakes_a_lingering_caller`).
#![cfg(loom)]

use loom::sync::Mutex;
use loom_tests::{Arc, model, thread};
use tollgate::fanout_nudge::Nudge;

/// The outcome channel, as a queue under a lock (the run uses a bounded crossbeam channel).
#[derive(Default)]
struct Channel {
    queue: Mutex<Vec<bool>>,
}

impl Channel {
    /// Sends an outcome (`true`: a failure); returns the queue's length after the send.
    fn send(&self, failed: bool) -> usize {
        let mut queue = self.queue.lock().unwrap();
        queue.push(failed);
        queue.len()
    }

    /// Takes every queued outcome.
    fn drain(&self) -> Vec<bool> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }
}

/// A runner as `run.rs` runs one: send, then report (with the key channel's length: `keys`).
fn runner(channel: &Channel, nudge: &Nudge, outcomes: &[(bool, usize)]) {
    for &(failed, keys) in outcomes {
        let queued = channel.send(failed);
        nudge.after_outcome(failed, queued, keys);
    }
}

/// Nudges only from 100 outcomes queued, or at 0 keys left: below both in these models unless
/// a model says so.
fn nudge() -> Arc<Nudge> {
    Arc::new(Nudge::new(100, 0))
}

/// Two runners each send one outcome the rules do not nudge for (no failure, far from both
/// marks): only the sleep protocol wakes the caller. The caller receives, lingers (its timeout
/// modelled as a yield) after receiving, and otherwise sleeps, as `run.rs`'s loop does; it must
/// receive both without ever sleeping past an outcome.
#[test]
fn no_outcome_waits_while_the_caller_sleeps() {
    model(|| {
        let channel = Arc::new(Channel::default());
        let nudge = nudge();
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let (channel, nudge) = (channel.clone(), nudge.clone());
                thread::spawn(move || runner(&channel, &nudge, &[(false, 50)]))
            })
            .collect();
        let mut received = 0u64;
        while received < 2 {
            let got = channel.drain().len() as u64;
            received += got;
            if got > 0 {
                thread::yield_now(); // a linger that ran its course
            } else if nudge.try_sleep(received) {
                nudge.sleep(std::time::Duration::from_secs(1));
            }
        }
        for runner in runners {
            runner.join().unwrap();
        }
        assert_eq!(nudge.sent(), 2);
        assert!(channel.drain().is_empty());
    });
}

/// A runner sends two outcomes, the second to a caller that may be asleep or draining: the
/// count never loses one (a caller that received the first before it was counted sleeps
/// safely too).
#[test]
fn one_runner_two_outcomes_reach_a_sleeping_caller() {
    model(|| {
        let channel = Arc::new(Channel::default());
        let nudge = nudge();
        let worker = {
            let (channel, nudge) = (channel.clone(), nudge.clone());
            thread::spawn(move || runner(&channel, &nudge, &[(false, 50), (false, 50)]))
        };
        let mut received = 0u64;
        while received < 2 {
            let got = channel.drain().len() as u64;
            received += got;
            if got == 0 && nudge.try_sleep(received) {
                nudge.sleep(std::time::Duration::from_secs(1));
            }
        }
        worker.join().unwrap();
        assert_eq!(nudge.sent(), 2);
    });
}

/// A failure wakes a caller that lingers — modelled strictly as a park that only an unpark
/// ends — while another runner's plain outcome may come before or after it.
#[test]
fn a_failure_wakes_a_lingering_caller() {
    model(|| {
        let channel = Arc::new(Channel::default());
        let nudge = nudge();
        let ok = {
            let (channel, nudge) = (channel.clone(), nudge.clone());
            thread::spawn(move || runner(&channel, &nudge, &[(false, 50)]))
        };
        let failing = {
            let (channel, nudge) = (channel.clone(), nudge.clone());
            thread::spawn(move || runner(&channel, &nudge, &[(true, 50)]))
        };
        loop {
            if channel.drain().contains(&true) {
                break;
            }
            nudge.linger(); // untimed under loom: only a nudge ends it
        }
        ok.join().unwrap();
        failing.join().unwrap();
    });
}

/// The last outcomes of a run find the key channel empty: they wake a lingering caller —
/// parked strictly, as above — even when they are not failures and the outcome channel is
/// nearly empty. Runner A sends a mid-run outcome (keys still queued: no nudge) and then its
/// last; runner B sends its last. Whatever the order, the caller (which lingers after
/// receiving and sleeps after a drain that brought nothing) gets all three.
#[test]
fn the_last_outcome_wakes_a_lingering_caller() {
    model(|| {
        let channel = Arc::new(Channel::default());
        let nudge = nudge();
        let a = {
            let (channel, nudge) = (channel.clone(), nudge.clone());
            thread::spawn(move || runner(&channel, &nudge, &[(false, 5), (false, 0)]))
        };
        let b = {
            let (channel, nudge) = (channel.clone(), nudge.clone());
            thread::spawn(move || runner(&channel, &nudge, &[(false, 0)]))
        };
        let mut received = 0;
        while received < 3 {
            let got = channel.drain().len();
            received += got;
            if received == 3 {
                break;
            }
            if got > 0 {
                nudge.linger(); // untimed under loom: only a nudge ends it
            } else if nudge.try_sleep(received as u64) {
                nudge.sleep(std::time::Duration::from_secs(1));
            }
        }
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// A runner that leaves without an outcome (its run cancelled) wakes a caller that sleeps,
/// which then sees that no runner is left.
#[test]
fn a_runner_leaving_wakes_the_caller() {
    model(|| {
        let nudge = nudge();
        let gone = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let leaving = {
            let (nudge, gone) = (nudge.clone(), gone.clone());
            thread::spawn(move || {
                // Release: pairs with the caller's Acquire load.
                gone.store(true, loom::sync::atomic::Ordering::Release);
                nudge.left();
            })
        };
        while !gone.load(loom::sync::atomic::Ordering::Acquire) {
            if nudge.try_sleep(0) {
                nudge.sleep(std::time::Duration::from_secs(1));
            }
        }
        leaving.join().unwrap();
    });
}
