//! Replicated requests (seed 001): an attempt runs as up to `copies` copies, at once or
//! staggered; each copy knows its index (so it can go to another server: [`Fetch::fetch_replica`],
//! the HTTP fetcher's mirrors); the first success wins and the other copies are cancelled, which
//! aborts their sockets. Hedging ([`FanOutBuilder::hedge_after`](super::FanOutBuilder::hedge_after))
//! is two copies, the second after a delay.
//!
//! Invariants:
//!
//! 1. Copy 0 (the primary) runs on the key's runner, with the key's permit and rate slot. Copy
//!    `i ≥ 1` is a pool job (`try_submit`, never waiting) that waits `i × stagger` on its own
//!    token and then runs only on spare capacity: a free permit (`try_acquire`), every limiter
//!    admitting it now (`check`), both taken without waiting; otherwise it is skipped (counted).
//!    So replication never breaks the in-flight cap or the rate; a run with `n` copies starts a
//!    `1/n` share of the runners, to leave workers and permits for the copies.
//! 2. (2–5 live in `race.rs`, which holds the race's state and is loom-checked alone.) The
//!    race moves under its lock. A copy is claimed once (by its pool job, or by the primary
//!    taking it over) and starts only while the race is open: no winner yet and the primary not
//!    done. The first success sets `winner`; nothing starts after that.
//! 3. The winner is the first copy to succeed: a success that finds a winner already is wasted.
//!    Once there is a winner, every other copy's token is cancelled (after the lock), so a
//!    losing fetch returns promptly and its socket is shut (`http/abort.rs`).
//! 4. The primary runs copy 0 on the runner. While its copy fails and nothing has won, it takes
//!    over the lowest copy nobody has started (its pool job will skip it), waits for a rate slot
//!    and runs it on its own permit: a failing mirror fails over at once instead of waiting out
//!    the stagger, and the primary never waits for a queued pool job (no deadlock on a busy or
//!    shared pool). With nothing left to take it closes the race and, if copies still run,
//!    waits for `settled`, cancelled when a winner is set or the last running copy ends (or the
//!    run ends: `settled` is a child of the run's token). A running copy always ends (its token
//!    is a child of the run's), so the wait ends.
//! 5. However the attempt ends, every copy's token is cancelled when the primary returns (a drop
//!    guard), so no copy outlives its attempt: a pending one wakes from its delay and leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Fetch;
use super::race::{Next, Race};
use super::run::Shared;
use super::stats::Counters;
use crate::error::{Error, ErrorKind};

/// The most copies of one attempt.
pub(crate) const MAX_COPIES: usize = 64;

/// How many copies of each attempt a fan-out sends, and when: copy `i` starts `i × stagger`
/// after the first (all at once with a zero stagger). The first success wins; the others are
/// cancelled. Extra copies only use spare capacity (a free permit, a rate token available now,
/// an idle worker), so they never break the in-flight cap or the rate; a run keeps `(n-1)/n` of
/// its workers and permits for them (give it `n` times the workers and permits).
///
/// Each copy is told its index ([`Fetch::fetch_replica`]): the HTTP fetcher sends copy `i` to
/// its mirror `i % mirrors` (`HttpFetcherBuilder::mirror`, feature `http`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, Error, FanOut, fanout::Replication};
///
/// // Three copies, 50 ms apart; each copy knows its index (here: which "server" to ask).
/// let servers = ["a", "b", "c"];
/// let fetch = move |key: &u32, _attempt: u32, replica: usize, _: &CancelToken| {
///     Ok::<_, Error>(format!("{key} from {}", servers[replica]))
/// };
/// let fan_out = FanOut::builder(tollgate::fanout::by_replica(fetch))
///     .max_in_flight(6)
///     .workers(6)
///     .replicate(Replication::new(3)?.stagger(Duration::from_millis(50)))
///     .build()?;
/// let got = fan_out.fetch_all(0..4u32, &CancelToken::new()).map_err(|e| e.error)?;
/// assert_eq!(got[&1], "1 from a"); // the first copy answers at once: no other starts
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    copies: usize,
    stagger: Duration,
}

impl Replication {
    /// Two copies at once: hedging's shape.
    pub(crate) const TWO: Replication = Replication {
        copies: 2,
        stagger: Duration::ZERO,
    };

    /// `copies` copies of each attempt (1: no replication), all at once until
    /// [`stagger`](Self::stagger) says otherwise.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for 0 copies or more than 64.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::fanout::Replication;
    /// assert_eq!(Replication::new(3)?.copies(), 3);
    /// assert!(Replication::new(0).is_err());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn new(copies: usize) -> Result<Replication, Error> {
        if copies == 0 || copies > MAX_COPIES {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("replication needs 1 to {MAX_COPIES} copies, not {copies}"),
            ));
        }
        Ok(Replication {
            copies,
            stagger: Duration::ZERO,
        })
    }

    /// Copy `i` starts `i × delay` after the first (zero: all at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let hedge = tollgate::fanout::Replication::new(2)?.stagger(Duration::from_millis(200));
    /// assert_eq!(hedge.delay_of(1), Duration::from_millis(200));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn stagger(mut self, delay: Duration) -> Replication {
        self.stagger = delay;
        self
    }

    /// Copies per attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::fanout::Replication::new(2)?.copies(), 2);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn copies(&self) -> usize {
        self.copies
    }

    /// When copy `index` starts, after the first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let r = tollgate::fanout::Replication::new(3)?.stagger(Duration::from_secs(1));
    /// assert_eq!(r.delay_of(2), Duration::from_secs(2));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn delay_of(&self, index: usize) -> Duration {
        self.stagger
            .saturating_mul(u32::try_from(index).unwrap_or(u32::MAX))
    }
}

/// Cancels every copy's token when the primary returns (invariant 5).
struct CancelAll<'a, T>(&'a Race<T>);

impl<T> Drop for CancelAll<'_, T> {
    fn drop(&mut self) {
        self.0.cancel_all();
    }
}

/// One attempt of `key` as `replication` copies (see the module docs). Runs copy 0 here, and
/// the copies nobody started once it failed.
pub(super) fn fetch_replicated<K, F>(
    shared: &Arc<Shared<F>>,
    key: &K,
    attempt: u32,
    replication: Replication,
) -> Result<F::Output, Error>
where
    K: Clone + Send + 'static,
    F: Fetch<K>,
{
    let race = Arc::new(Race::new(replication.copies, &shared.group));
    let _cancel_all = CancelAll(&race);
    for index in 1..replication.copies {
        let job = copy_job(
            shared.clone(),
            key.clone(),
            attempt,
            index,
            replication.delay_of(index),
            race.clone(),
        );
        if shared.pool.try_submit(job).is_err() {
            Counters::add(&shared.counters.replicas_skipped);
        }
    }

    // Invariant 4: copy 0, then (while it fails) every copy nobody has started, here.
    let mut index = 0;
    let last_error = loop {
        let result = shared
            .fetcher
            .fetch_replica(key, attempt, index, race.token(index));
        let take_over = !shared.group.is_cancelled();
        match race.primary_done(index, result, take_over) {
            Next::Done(error) => break error,
            Next::Run(next) => {
                // A copy taken over runs on this runner's permit, with a rate slot of its own.
                if let Err(stopped) = shared.wait_for_slot() {
                    race.close();
                    break Some(stopped);
                }
                Counters::add(&shared.counters.replicas);
                index = next;
            }
        }
    };
    match race.outcome(last_error) {
        (Ok((index, output)), started) => {
            race.cancel_losers(index);
            if index > 0 {
                Counters::add(&shared.counters.replica_wins);
            }
            Counters::add_n(&shared.counters.replicas_wasted, started - 1);
            Ok(output)
        }
        (Err(error), _) => Err(error.unwrap_or_else(|| {
            // Not reached: no winner means the last copy run here failed (invariant 4).
            Error::new(
                ErrorKind::Cancelled(crate::cancel::Cause::Cancelled),
                "no copy of the request answered",
            )
        })),
    }
}

/// Copy `index` of an attempt, as a pool job (invariants 1–3).
fn copy_job<K, F>(
    shared: Arc<Shared<F>>,
    key: K,
    attempt: u32,
    index: usize,
    delay: Duration,
    race: Arc<Race<F::Output>>,
) -> impl FnOnce() + Send + 'static
where
    K: Send + 'static,
    F: Fetch<K>,
{
    move || {
        // The copy runs on a worker: inside the run's span and trace (observability).
        let _obs = (shared.span.enter(), shared.trace.enter());
        let token = race.token(index);
        if (!delay.is_zero() && token.wait_timeout(delay)) || token.is_cancelled() {
            return; // decided, or the run is over
        }
        if !race.is_open_for(index) {
            return;
        }
        // Invariant 1: only spare capacity, taken without waiting (and outside the race's lock:
        // the limiters are user code).
        let permit = shared.semaphore.try_acquire_owned(1).ok();
        if permit.is_none() || !shared.admit_now() {
            Counters::add(&shared.counters.replicas_skipped);
            return; // the primary may still take it over
        }
        if !race.claim(index) {
            return; // decided or taken meanwhile: the rate token stays spent (strict)
        }
        Counters::add(&shared.counters.replicas);
        shared.counters.start_request();
        let started = Instant::now();
        // A panicking fetch still ends its copy (the primary may be waiting for it).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.fetcher.fetch_replica(&key, attempt, index, token)
        }))
        .unwrap_or_else(|payload| {
            let error = super::run::panic_error(&*payload);
            // A payload whose drop panics must not skip `copy_done` below.
            crate::pool::drop_payload(payload);
            Err(error)
        });
        shared.counters.end_request(started.elapsed());
        drop(permit);
        race.copy_done(index, result);
    }
}
