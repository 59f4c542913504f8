//! loom models of a replicated fan-out attempt's race (`src/fanout/race.rs`): the first copy
//! to succeed answers whichever thread runs it, a failed first copy takes over the copies not
//! started and waits for the running ones, and the wait always ends. `tollgate::fanout_race`
//! exists only in loom builds, so this file is empty without loom — `tests/fanout.rs`
//! (`the_first_success_wins`) and `tests/fanout_http.rs` cover the fan-out on real threads.
//!
//! Mutants that fail these models (tried by hand, each reverted): `copy_done` not settling when
//! the last running copy fails after the primary closed the race (loom reports the primary's
//! wait deadlocked, in `a_later_success_wins_on_any_thread`), and `primary_done` closing instead
//! of taking over an unclaimed copy (three models answer an error).
#![cfg(loom)]

use loom_tests::{Arc, model, thread};
use tollgate::fanout_race::{Next, Race};
use tollgate::{CancelToken, Error, ErrorKind};

fn outcome(index: usize, ok: bool) -> Result<usize, Error> {
    if ok {
        Ok(index)
    } else {
        Err(Error::new(
            ErrorKind::Status(500),
            format!("copy {index} failed"),
        ))
    }
}

/// The primary as `replicate.rs` runs it: copy 0, then copies it takes over, then the outcome.
fn primary(race: &Race<usize>, oks: &[bool]) -> Result<usize, ()> {
    let mut index = 0;
    let last = loop {
        match race.primary_done(index, outcome(index, oks[index]), true) {
            Next::Done(error) => break error,
            Next::Run(next) => index = next,
        }
    };
    let answer = match race.outcome(last) {
        (Ok((winner, value)), _) => {
            race.cancel_losers(winner);
            Ok(value)
        }
        (Err(_), _) => Err(()),
    };
    race.cancel_all();
    answer
}

/// A pool job running copy `index`.
fn copy(race: &Race<usize>, index: usize, ok: bool) {
    if race.claim(index) {
        race.copy_done(index, outcome(index, ok));
    }
}

/// Runs a race of `oks.len()` copies, copies 1.. on threads of their own; the answer.
fn race(oks: &'static [bool]) -> Result<usize, ()> {
    let parent = CancelToken::new();
    let race = Arc::new(Race::new(oks.len(), &parent));
    let copies: Vec<_> = (1..oks.len())
        .map(|index| {
            let race = race.clone();
            thread::spawn(move || copy(&race, index, oks[index]))
        })
        .collect();
    let answer = primary(&race, oks);
    for copy in copies {
        copy.join().unwrap();
    }
    answer
}

/// The first copy fails, the second succeeds: its answer wins, whether its pool job or the
/// primary (taking it over) runs it.
#[test]
fn a_failed_primary_gets_the_running_copys_success() {
    model(|| assert_eq!(race(&[false, true]), Ok(1)));
}

/// Three copies, only the last succeeds: it answers, on whichever thread.
#[test]
fn a_later_success_wins_on_any_thread() {
    model(|| assert_eq!(race(&[false, false, true]), Ok(2)));
}

/// Every copy fails: the primary's wait ends and the attempt fails.
#[test]
fn every_copy_failing_ends_the_wait() {
    model(|| assert_eq!(race(&[false, false]), Err(())));
}

/// Two successes race: one of them answers, exactly one.
#[test]
fn of_two_successes_one_answers() {
    model(|| {
        let answer = race(&[false, true, true]);
        assert!(matches!(answer, Ok(1) | Ok(2)), "{answer:?}");
    });
}
