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
//! 3. Waiters park until their request is `Done` or they are appointed `Lead`; spurious wakes
//!    re-check. Each pipeline round trip is bounded by the connection's timeouts, so a waiter
//!    waits at most for the pipelines in flight plus its own.
//! 4. A NOSCRIPT entry did not run: the leader loads the script and re-sends exactly those
//!    entries. No other entry is ever re-sent (a failed call may have run).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::decision::BackendError;
use super::pool::{Pool, connection_survives};
use super::script::Reply;
use crate::sync::{Arc, Mutex, Thread, current, park};

/// Most calls in one pipeline.
const MAX_BATCH: usize = 128;

/// Most pipelines in flight at once (invariant 1).
const MAX_LEADERS: usize = 2;

type Outcome = Result<Reply, BackendError>;

#[derive(Debug)]
enum State {
    Waiting,
    Lead,
    Done(Outcome),
}

#[derive(Debug)]
struct Request {
    keys: Vec<String>,
    args: Vec<u64>,
    state: Mutex<State>,
    thread: Thread,
}

#[derive(Debug, Default)]
struct Queue {
    pending: Vec<Arc<Request>>,
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
            state: Mutex::new(State::Waiting),
            thread: current(),
        });
        let lead = {
            let mut queue = self.queue.lock();
            if queue.leaders < MAX_LEADERS {
                queue.leaders += 1;
                true
            } else {
                queue.pending.push(Arc::clone(&me));
                false
            }
        };
        if lead {
            self.lead(pool, script, &me);
        }
        loop {
            let state = std::mem::replace(&mut *me.state.lock(), State::Waiting);
            match state {
                State::Done(outcome) => return outcome,
                State::Lead => self.lead(pool, script, &me),
                State::Waiting => park(),
            }
        }
    }

    /// Sends one pipeline led by `me` (out of the queue, holding a slot), answers it, and hands
    /// the slot on (invariant 1).
    fn lead(&self, pool: &Pool, script: &::redis::Script, me: &Arc<Request>) {
        let batch: Vec<Arc<Request>> = {
            let mut queue = self.queue.lock();
            let take = queue.pending.len().min(MAX_BATCH - 1);
            std::iter::once(Arc::clone(me))
                .chain(queue.pending.drain(..take))
                .collect()
        };
        let ran = catch_unwind(AssertUnwindSafe(|| run_batch(pool, script, &batch)));
        let outcomes = match &ran {
            Ok(outcomes) => outcomes.clone(),
            Err(_) => vec![Err(BackendError::Protocol); batch.len()],
        };
        // Hand the slot on before handing the replies out: the next pipeline is on its way while
        // this thread unparks the waiters.
        {
            let mut queue = self.queue.lock();
            if queue.pending.is_empty() {
                queue.leaders -= 1;
            } else {
                // The slot passes to the oldest queued request, out of the queue (invariant 2).
                let next = queue.pending.remove(0);
                *next.state.lock() = State::Lead;
                next.thread.unpark();
            }
        }
        for (request, outcome) in batch.iter().zip(outcomes) {
            *request.state.lock() = State::Done(outcome);
            if !Arc::ptr_eq(request, me) {
                request.thread.unpark();
            }
        }
        if let Err(panic) = ran {
            resume_unwind(panic);
        }
    }
}

/// One pipeline for `batch` (invariants 2 and 4).
fn run_batch(pool: &Pool, script: &::redis::Script, batch: &[Arc<Request>]) -> Vec<Outcome> {
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
