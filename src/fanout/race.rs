//! One replicated attempt's race (`replicate.rs`), apart from the fan-out so that loom can
//! check it (`loom-tests/tests/fanout_race.rs`; the fan-out is compiled out under loom).
//!
//! Invariants:
//!
//! 1. The race moves under its lock. A copy is claimed once (by its pool job: [`Race::claim`],
//!    or by the primary taking it over: [`Race::primary_done`]) and starts only while the race
//!    is open: no winner yet and the primary not done. The first success sets the winner;
//!    nothing starts after that.
//! 2. The winner is the first copy to succeed: a success that finds a winner already is wasted.
//!    Once there is a winner, every other copy's token is cancelled (after the lock).
//! 3. The primary, its copy over: a success with no winner yet wins; a winner already there is
//!    taken; a failure takes over the lowest copy nobody has claimed (if it may) or, with
//!    none, closes the race. [`Race::outcome`] then waits for `settled` if copies still run:
//!    `settled` is cancelled when a winner is set or the last running copy ends with the race
//!    closed, or when the parent token is cancelled (it is a child). A running copy always
//!    ends ([`Race::copy_done`], its token a child of the parent), so the wait ends.
//! 4. [`Race::cancel_all`] (the primary's drop guard) cancels every copy's token: no copy
//!    outlives its attempt.

// `pub` so that loom builds can export this file alone (`tollgate::fanout_race`) to the models;
// in normal builds the module is private to the fan-out.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use crate::cancel::CancelToken;
use crate::error::Error;
use crate::sync::Mutex;

struct State<T> {
    /// The first success and the copy that sent it.
    winner: Option<(usize, T)>,
    /// Which copies someone has taken to run.
    claimed: Vec<bool>,
    /// Copies running on pool jobs now.
    running: usize,
    /// Copies that ran or run, the primary's included.
    started: u64,
    /// The primary has nothing left to run: no copy starts any more.
    closed: bool,
}

impl<T> State<T> {
    fn open(&self) -> bool {
        self.winner.is_none() && !self.closed
    }

    /// Records copy `index`'s result; whether it won (invariant 2).
    fn finish(&mut self, index: usize, result: Result<T, Error>) -> bool {
        match result {
            Ok(output) if self.winner.is_none() => {
                self.winner = Some((index, output));
                true
            }
            _ => false,
        }
    }
}

/// What the primary does after its copy ended ([`Race::primary_done`]).
#[derive(Debug)]
pub enum Next {
    /// Run copy `index`, taken over (it is claimed: its pool job will skip it).
    Run(usize),
    /// Nothing more to run: a copy won (this one or another), or this failure closed the race.
    Done(Option<Error>),
}

/// One attempt's race between its copies (see the module docs).
pub struct Race<T> {
    state: Mutex<State<T>>,
    /// Cancelled when the primary may stop waiting (invariant 3).
    settled: CancelToken,
    /// Each copy's token, index = copy.
    tokens: Vec<CancelToken>,
}

impl<T> std::fmt::Debug for Race<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Race")
            .field("copies", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl<T> Race<T> {
    /// A race of `copies` copies (at least 1), the primary's (0) claimed; every token a child
    /// of `parent`.
    pub fn new(copies: usize, parent: &CancelToken) -> Race<T> {
        let copies = copies.max(1);
        let mut claimed = vec![false; copies];
        claimed[0] = true;
        Race {
            state: Mutex::new(State {
                winner: None,
                claimed,
                running: 0,
                started: 1,
                closed: false,
            }),
            settled: parent.child(),
            tokens: (0..copies).map(|_| parent.child()).collect(),
        }
    }

    /// Copy `index`'s token.
    pub fn token(&self, index: usize) -> &CancelToken {
        &self.tokens[index]
    }

    /// Whether copy `index` could still start (a pool job checks before taking capacity).
    pub fn is_open_for(&self, index: usize) -> bool {
        let state = self.state.lock();
        state.open() && !state.claimed[index]
    }

    /// A pool job claims copy `index` to run it: false if it is taken or the race is decided
    /// (invariant 1).
    pub fn claim(&self, index: usize) -> bool {
        let mut state = self.state.lock();
        if !state.open() || state.claimed[index] {
            return false;
        }
        state.claimed[index] = true;
        state.running += 1;
        state.started += 1;
        true
    }

    /// A claimed pool copy ended with `result` (invariants 2, 3).
    pub fn copy_done(&self, index: usize, result: Result<T, Error>) {
        let (won, settle) = {
            let mut state = self.state.lock();
            state.running -= 1;
            let won = state.finish(index, result);
            (
                won,
                state.winner.is_some() || (state.closed && state.running == 0),
            )
        };
        if won {
            self.cancel_losers(index);
        }
        if settle {
            self.settled.cancel();
        }
    }

    /// The primary's copy `index` ended with `result`; `take_over` says whether it may run
    /// another copy (false once the run is over). Invariant 3.
    pub fn primary_done(&self, index: usize, result: Result<T, Error>, take_over: bool) -> Next {
        let mut state = self.state.lock();
        let error = match result {
            Ok(output) => {
                let won = state.finish(index, Ok(output));
                drop(state);
                if won {
                    self.cancel_losers(index);
                }
                return Next::Done(None);
            }
            Err(_) if state.winner.is_some() => return Next::Done(None),
            Err(error) => error,
        };
        match state.claimed.iter().position(|taken| !taken) {
            Some(next) if take_over => {
                state.claimed[next] = true;
                state.started += 1;
                Next::Run(next)
            }
            _ => {
                state.closed = true;
                Next::Done(Some(error))
            }
        }
    }

    /// The primary gives up before running a copy it took over (the run ended meanwhile).
    pub fn close(&self) {
        self.state.lock().closed = true;
    }

    /// The attempt's answer once the primary is done (`last_error`: its last failure, if it
    /// failed): waits for running copies if it failed (invariant 3). Returns the winner (its
    /// index and output) or the error, with the number of copies that ran.
    pub fn outcome(&self, last_error: Option<Error>) -> (Result<(usize, T), Option<Error>>, u64) {
        if last_error.is_some() {
            let running = self.state.lock().running;
            if running > 0 {
                self.settled.wait();
            }
        }
        let mut state = self.state.lock();
        state.closed = true;
        let started = state.started;
        (state.winner.take().ok_or(last_error), started)
    }

    /// Cancels every copy's token but `winner`'s (invariant 2).
    pub fn cancel_losers(&self, winner: usize) {
        for (index, token) in self.tokens.iter().enumerate() {
            if index != winner {
                token.cancel();
            }
        }
    }

    /// Cancels every copy's token (invariant 4).
    pub fn cancel_all(&self) {
        for token in &self.tokens {
            token.cancel();
        }
    }
}
