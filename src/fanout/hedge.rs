//! Hedged requests (seed 001's "replicated requests"): when an attempt has not answered after
//! a delay, a second copy runs on a spare worker; the first success wins and the other copy is
//! cancelled.
//!
//! Invariants:
//!
//! 1. A hedge never breaks the run's limits: it runs only if, when its delay is over, a permit
//!    is free (`try_acquire`, never waiting), every limiter admits it now (`check`, never
//!    waiting) and a pool thread takes the job. Otherwise it is skipped, and the attempt is the
//!    primary's alone. (A run with hedging keeps half of its permits and workers for hedges.)
//! 2. The race's phase moves under its lock: `Pending` (hedge waiting for its delay) →
//!    `Running` → `Done(result)`, or `Pending` → `Abandoned` (skipped, or the primary finished
//!    first). The primary waits for the hedge only while it is `Running`, and a running hedge
//!    always ends (its token is a child of the run's group token) and then signals `finished`.
//! 3. The winner cancels the loser's token: the hedge cancels the primary's when it succeeds,
//!    the primary cancels the hedge's whenever it is done. A primary whose token the hedge
//!    cancelled finds the hedge's success in `Done` and returns it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Fetch;
use super::run::Shared;
use super::stats::Counters;
use crate::cancel::CancelToken;
use crate::error::Error;
use crate::sync::Mutex;

/// Where the hedge of one attempt stands (invariant 2).
enum Phase<T> {
    Pending,
    Running,
    Done(Result<T, Error>),
    Abandoned,
}

struct Race<T> {
    phase: Mutex<Phase<T>>,
    /// Cancelled when the hedge job ends, however it ends: what the primary waits on.
    finished: CancelToken,
}

/// One attempt of `key`, hedged after `after` (see the module docs).
pub(super) fn fetch_hedged<K, F>(
    shared: &Arc<Shared<F>>,
    key: &K,
    attempt: u32,
    after: Duration,
) -> Result<F::Output, Error>
where
    K: Clone + Send + 'static,
    F: Fetch<K>,
{
    let primary = shared.group.child();
    let hedge = shared.group.child();
    let race = Arc::new(Race {
        phase: Mutex::new(Phase::Pending),
        finished: CancelToken::new(),
    });
    let job = hedge_job(
        shared.clone(),
        key.clone(),
        attempt,
        after,
        hedge.clone(),
        primary.clone(),
        race.clone(),
    );
    let hedged = shared.pool.try_submit(job).is_ok();

    let result = shared.fetcher.fetch(key, attempt, &primary);
    if !hedged {
        return result;
    }
    // Invariant 3: a failed primary waits for a hedge that is running (or has answered); in
    // every other case the hedge is not needed any more.
    let wait_for_hedge = {
        let mut phase = race.phase.lock();
        match &*phase {
            Phase::Pending => {
                *phase = Phase::Abandoned;
                false
            }
            Phase::Abandoned => false,
            Phase::Running | Phase::Done(_) => result.is_err(),
        }
    };
    if !wait_for_hedge {
        hedge.cancel();
        return result;
    }
    race.finished.wait();
    let answer = std::mem::replace(&mut *race.phase.lock(), Phase::Abandoned);
    match answer {
        Phase::Done(Ok(output)) => Ok(output),
        _ => result,
    }
}

#[allow(clippy::too_many_arguments)]
fn hedge_job<K, F>(
    shared: Arc<Shared<F>>,
    key: K,
    attempt: u32,
    after: Duration,
    hedge: CancelToken,
    primary: CancelToken,
    race: Arc<Race<F::Output>>,
) -> impl FnOnce() + Send + 'static
where
    K: Send + 'static,
    F: Fetch<K>,
{
    move || {
        // Always signal the end, so a primary waiting on a running hedge wakes (invariant 2).
        let _signal = race.finished.clone().drop_guard();
        let _obs = (shared.span.enter(), shared.trace.enter());
        if hedge.wait_timeout(after) {
            return; // the primary is done, or the run is over
        }
        // Invariant 1: only spare capacity, taken without waiting.
        let permit = {
            let mut phase = race.phase.lock();
            if !matches!(*phase, Phase::Pending) {
                return;
            }
            let permit = shared.semaphore.try_acquire_owned(1).ok();
            let admitted = permit.is_some() && shared.admit_now();
            if !admitted {
                *phase = Phase::Abandoned;
                return;
            }
            *phase = Phase::Running;
            permit
        };
        Counters::add(&shared.counters.hedges);
        shared.counters.start_request();
        let started = Instant::now();
        let result = shared.fetcher.fetch(&key, attempt, &hedge);
        shared.counters.end_request(started.elapsed());
        drop(permit);
        let won = result.is_ok();
        *race.phase.lock() = Phase::Done(result);
        if won {
            primary.cancel();
        }
    }
}
