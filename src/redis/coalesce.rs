//! Coalescing: concurrent callers' script calls sent as pipelines on the pool's connections.
//!
//! Invariants:
//!
//! 1. At most [`MAX_LEADERS`] leaders at a time, each with its own connection: one pipeline can be
//!    in flight in Redis while another leader collects, sends, or hands its replies out (with a
//!    single leader, Redis idles during every hand-out and every wake-up of the next leader). A
//!    caller becomes a leader at once if a leader slot is free; otherwise it queues its request and
//!    parks. A leader sends exactly one pipeline — its own request first, then up to
//!    `MAX_BATCH − 1` queued ones, oldest first — fills every request's result, unparks their
//!    threads, and gives its slot back; if requests are queued, it appoints the oldest one's thread
//!    as a leader, taking that request out of the queue (so no caller serves others more than once,
//!    and an appointed leader's request is answered by nobody but itself).
//! 2. Every request gets exactly one result: a leader's own is in its own pipeline; a queued one is
//!    either drained by exactly one leader (under the queue lock) or appointed. The leader fills the
//!    whole batch even when the pipeline fails (every entry gets the error) or panics (every entry
//!    gets `Protocol`, and the slot is handed on before the panic continues). No request stays
//!    queued without a leader: a request is queued only while every slot is taken, and every
//!    leader, under the same lock, appoints a queued request when it leaves.
//! 3. Queued requests wait on the queue's [`WaitList`] until decided `DONE` (their outcome is in
//!    their slot) or `LEAD` (appointed); the list's `claim` takes a batch out without deciding it,
//!    and its leader decides each entry exactly once. Each pipeline round trip is bounded by the
//!    connection's timeouts, so a waiter waits at most for the pipelines in flight plus its own.
//! 4. A NOSCRIPT entry did not run: the leader loads the script and re-sends exactly those
//!    entries. No other entry is ever re-sent (a failed call may have run).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::decision::BackendError;
use super::pool::{Pool, connection_survives};
use super::script::Reply;
use crate::sync::{Arc, Mutex};
use crate::wait::{WaitList, Waiter, Wakes};

/// Most calls in one pipeline.
const MAX_BATCH: usize = 128;

/// Most pipelines in flight at once (invariant 1).
const MAX_LEADERS: usize = 2;

type Outcome = Result<Reply, BackendError>;

/// The status of a queued request appointed leader (invariant 1).
const LEAD: usize = 0;
/// The status of a queued request whose outcome is in its slot.
const DONE: usize = 1;

#[derive(Debug)]
struct Request {
    keys: Vec<String>,
    args: Vec<u64>,
    /// Written by the leader that claimed the request, before it decides it `DONE`.
    outcome: Mutex<Option<Outcome>>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: WaitList<Arc<Request>>,
    /// Leader slots taken.
    leaders: usize,
}

/// The coalescing queue of one limiter.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    queue: Mutex<Queue>,
}

impl Coalescer {
    /// Runs one script call, possibly in a pipeline with other callers' calls.
    pub(crate) fn call(
        &self,
        pool: &Pool,
        script: &::redis::Script,
        keys: &[String],
        args: Vec<u64>,
    ) -> Outcome {
        let me = Arc::new(Request {
            keys: keys.to_vec(),
            args,
            outcome: Mutex::new(None),
        });
        let waiter = {
            let mut queue = self.queue.lock();
            if queue.leaders < MAX_LEADERS {
                queue.leaders += 1;
                None
            } else {
                Some(queue.pending.register(Arc::clone(&me)))
            }
        };
        if let Some(waiter) = waiter {
            // No token: every pipeline ahead is bounded by its connection's timeouts
            // (invariant 3), so the wait cannot fail.
            if waiter.wait(None) == Ok(DONE) {
                // Invariant 2: filled before `DONE`.
                let outcome = me.outcome.lock().take();
                return outcome.unwrap_or(Err(BackendError::Protocol));
            }
            // Appointed: lead a pipeline of our own.
        }
        self.lead(pool, script, &me)
    }

    /// Sends one pipeline led by `me` (out of the queue, holding a slot), answers it, hands the
    /// slot on (invariant 1) and returns `me`'s own outcome.
    fn lead(&self, pool: &Pool, script: &::redis::Script, me: &Arc<Request>) -> Outcome {
        let claimed: Vec<(Arc<Request>, Arc<Waiter>)> = {
            let mut queue = self.queue.lock();
            let take = queue.pending.len().min(MAX_BATCH - 1);
            (0..take).filter_map(|_| queue.pending.claim()).collect()
        };
        let batch: Vec<&Request> = std::iter::once(&**me)
            .chain(claimed.iter().map(|(request, _)| &**request))
            .collect();
        let ran = catch_unwind(AssertUnwindSafe(|| run_batch(pool, script, &batch)));
        let mut outcomes = match &ran {
            Ok(outcomes) => outcomes.clone(),
            Err(_) => vec![Err(BackendError::Protocol); batch.len()],
        }
        .into_iter();
        // Hand the slot on before handing the replies out: the next pipeline is on its way while
        // this thread wakes the waiters.
        let mut wakes = Wakes::default();
        {
            let mut queue = self.queue.lock();
            // The slot passes to the oldest queued request, out of the queue (invariant 2).
            if queue.pending.notify_one(LEAD, &mut wakes).is_none() {
                queue.leaders -= 1;
            }
        }
        wakes.unpark();
        let mine = outcomes.next().unwrap_or(Err(BackendError::Protocol));
        for ((request, waiter), outcome) in claimed.iter().zip(outcomes) {
            *request.outcome.lock() = Some(outcome);
            let mut wakes = Wakes::default();
            waiter.decide(DONE, &mut wakes);
            wakes.unpark();
        }
        if let Err(panic) = ran {
            resume_unwind(panic);
        }
        mine
    }
}

/// One pipeline for `batch` (invariants 2 and 4).
fn run_batch(pool: &Pool, script: &::redis::Script, batch: &[&Request]) -> Vec<Outcome> {
    if batch.is_empty() {
        return Vec::new();
    }
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(err) => return vec![Err(super::decision::classify(&err)); batch.len()],
    };
    let send = |conn: &mut ::redis::Connection, which: &[usize]| {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for &i in which {
            let r = &batch[i];
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(r.keys.len())
                .arg(&r.keys)
                .arg(&r.args);
        }
        pipe.query::<Vec<::redis::RedisResult<Vec<i64>>>>(conn)
    };
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut outcomes = vec![Err(BackendError::Protocol); batch.len()];
    let mut todo = all;
    for attempt in 0..2 {
        let replies = match send(conn.conn(), &todo) {
            Ok(replies) if replies.len() == todo.len() => replies,
            Ok(_) => {
                conn.discard();
                return outcomes;
            }
            Err(err) => {
                let why = super::decision::classify(&err);
                if !connection_survives(&err) {
                    conn.discard();
                }
                for &i in &todo {
                    outcomes[i] = Err(why);
                }
                return outcomes;
            }
        };
        let mut noscript = Vec::new();
        for (&i, reply) in todo.iter().zip(replies) {
            outcomes[i] = match reply {
                Ok(values) => Reply::parse(&values).ok_or(BackendError::Protocol),
                Err(err)
                    if attempt == 0
                        && err.kind()
                            == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
                {
                    noscript.push(i);
                    Err(BackendError::Server)
                }
                Err(err) => Err(super::decision::classify(&err)),
            };
        }
        if noscript.is_empty() {
            break;
        }
        if let Err(err) = script.load(conn.conn()) {
            if !connection_survives(&err) {
                conn.discard();
            }
            return outcomes;
        }
        todo = noscript;
    }
    outcomes
}
