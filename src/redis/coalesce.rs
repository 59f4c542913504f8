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
//! 5. Nobody waits past its own deadline (`start + budget`). A leader's pipeline connects and
//!    sends within what is left of the leader's deadline (`pool.rs` invariant 5). A queued caller
//!    waits on a token with its deadline; when it passes, it leaves under the queue lock: still
//!    queued, it is removed (never sent) and times out; appointed (`LEAD`), it hands the slot on
//!    as a leader leaving would (no pipeline of its own: its budget is spent) and times out;
//!    decided (`DONE`), it takes its outcome; claimed by a leader and not yet decided, it times out
//!    and the leader's later `DONE` lands in a slot nobody reads (the call may have run, as any
//!    timed-out call may: `limiter.rs` invariant 1).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::decision::BackendError;
use super::pool::{Pool, Pooled, connection_survives};
use super::script::Reply;
use crate::cancel::CancelToken;
use crate::sync::{Arc, Mutex};
use crate::wait::{WAITING, WaitList, Waiter, Wakes};

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
        deadline: Instant,
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
            let token = CancelToken::with_deadline(deadline);
            let status = match waiter.wait(Some(&token)) {
                Ok(status) => status,
                Err(_) => self.abandon(&waiter),
            };
            match status {
                // Invariant 2: filled before `DONE`.
                DONE => {
                    return me
                        .outcome
                        .lock()
                        .take()
                        .unwrap_or(Err(BackendError::Protocol));
                }
                LEAD => {} // appointed in time: lead a pipeline of our own
                _ => return Err(BackendError::Timeout),
            }
        }
        self.lead(pool, script, &me, deadline)
    }

    /// The deadline passed while queued (invariant 5): leaves, and returns `DONE` when the
    /// outcome is in, or anything else for a timeout (an appointment is handed on first).
    #[cold]
    fn abandon(&self, waiter: &Arc<Waiter>) -> usize {
        let mut wakes = Wakes::default();
        let status = {
            let mut queue = self.queue.lock();
            let status = queue.pending.leave(waiter);
            if status == LEAD && queue.pending.notify_one(LEAD, &mut wakes).is_none() {
                queue.leaders -= 1;
            }
            status
        };
        wakes.unpark();
        if status == LEAD { WAITING } else { status }
    }

    /// Sends one pipeline led by `me` (out of the queue, holding a slot), answers it, hands the
    /// slot on (invariant 1) and returns `me`'s own outcome.
    fn lead(
        &self,
        pool: &Pool,
        script: &::redis::Script,
        me: &Arc<Request>,
        deadline: Instant,
    ) -> Outcome {
        let claimed: Vec<(Arc<Request>, Arc<Waiter>)> = {
            let mut queue = self.queue.lock();
            let take = queue.pending.len().min(MAX_BATCH - 1);
            (0..take).filter_map(|_| queue.pending.claim()).collect()
        };
        let batch: Vec<&Request> = std::iter::once(&**me)
            .chain(claimed.iter().map(|(request, _)| &**request))
            .collect();
        let ran = catch_unwind(AssertUnwindSafe(|| {
            run_batch(pool, script, &batch, deadline)
        }));
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

/// Sends a packed pipeline and reads its `count` replies, stopping at the first I/O error
/// (invariant 5). Not the redis crate's `Pipeline::query`: after an I/O error it goes on reading
/// the remaining replies, each with the full socket timeout, so a pipeline of `k` calls to a
/// stalled server took `k` budgets. Before each reply the timeouts are cut to what is left of the
/// deadline once less than half the budget is left (a setsockopt only on that slow path).
fn read_replies(
    conn: &mut Pooled<'_>,
    packed: &[u8],
    count: usize,
    deadline: Instant,
) -> ::redis::RedisResult<Vec<::redis::RedisResult<Vec<i64>>>> {
    conn.conn().send_packed_command(packed)?;
    let mut replies = Vec::with_capacity(count);
    for _ in 0..count {
        if deadline.saturating_duration_since(Instant::now()) < conn.half_budget() {
            conn.shorten(Some(deadline))?;
        }
        let value = conn.conn().recv_response()?;
        replies.push(value.extract_error().and_then(|value| {
            ::redis::from_redis_value::<Vec<i64>>(value).map_err(::redis::RedisError::from)
        }));
    }
    Ok(replies)
}

/// One pipeline for `batch` (invariants 2 and 4).
fn run_batch(
    pool: &Pool,
    script: &::redis::Script,
    batch: &[&Request],
    deadline: Instant,
) -> Vec<Outcome> {
    if batch.is_empty() {
        return Vec::new();
    }
    let mut conn = match pool.get_by(Some(deadline)) {
        Ok(conn) => conn,
        Err(err) => return vec![Err(super::decision::classify(&err)); batch.len()],
    };
    let send = |conn: &mut Pooled<'_>, which: &[usize]| {
        let mut pipe = ::redis::pipe();
        for &i in which {
            let r = &batch[i];
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(r.keys.len())
                .arg(&r.keys)
                .arg(&r.args);
        }
        read_replies(conn, &pipe.get_packed_pipeline(), which.len(), deadline)
    };
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut outcomes = vec![Err(BackendError::Protocol); batch.len()];
    let mut todo = all;
    for attempt in 0..2 {
        let replies = match send(&mut conn, &todo) {
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
        if let Err(err) = conn
            .shorten(Some(deadline))
            .and_then(|()| script.load(conn.conn()))
            .and_then(|_| conn.shorten(Some(deadline)))
        {
            if !connection_survives(&err) {
                conn.discard();
            }
            return outcomes;
        }
        todo = noscript;
    }
    outcomes
}
