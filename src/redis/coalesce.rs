//! Coalescing: concurrent callers' script calls sent as one pipeline on one connection.
//!
//! Invariants:
//!
//! 1. At most one leader at a time. A caller queues its request; if no leader is active it
//!    becomes the leader. The leader sends everything queued as one pipeline, fills every
//!    request's result and unparks its thread, and repeats while requests keep arriving — until
//!    its own request is answered; then, if the queue is not empty, it appoints the oldest queued
//!    request's thread as the next leader (so no caller serves others forever).
//! 2. Every queued request gets exactly one result: the leader fills the whole batch even when
//!    the pipeline fails (every entry gets the error) or panics (every entry gets
//!    `Protocol`, and leadership is handed on before the panic continues).
//! 3. Waiters park until their request is `Done` or they are appointed `Lead`; spurious wakes
//!    re-check. Each pipeline round trip is bounded by the connection's timeouts, so a waiter
//!    waits at most for the batch in flight plus its own.
//! 4. A NOSCRIPT entry did not run: the leader loads the script and re-sends exactly those
//!    entries. No other entry is ever re-sent (a failed call may have run).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::decision::BackendError;
use super::pool::{Pool, connection_survives};
use super::script::Reply;
use crate::sync::{Arc, Mutex, Thread, current, park};

/// Most calls in one pipeline.
const MAX_BATCH: usize = 128;

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
    leader: bool,
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
            queue.pending.push(Arc::clone(&me));
            !std::mem::replace(&mut queue.leader, true)
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

    /// Serves batches until `me` is answered, then hands leadership on (invariant 1).
    fn lead(&self, pool: &Pool, script: &::redis::Script, me: &Arc<Request>) {
        loop {
            let batch: Vec<Arc<Request>> = {
                let mut queue = self.queue.lock();
                let take = queue.pending.len().min(MAX_BATCH);
                queue.pending.drain(..take).collect()
            };
            let ran = catch_unwind(AssertUnwindSafe(|| run_batch(pool, script, &batch)));
            let outcomes = match &ran {
                Ok(outcomes) => outcomes.clone(),
                Err(_) => vec![Err(BackendError::Protocol); batch.len()],
            };
            let mut answered = false;
            for (request, outcome) in batch.iter().zip(outcomes) {
                answered |= Arc::ptr_eq(request, me);
                *request.state.lock() = State::Done(outcome);
                if !Arc::ptr_eq(request, me) {
                    request.thread.unpark();
                }
            }
            if answered || ran.is_err() {
                let mut queue = self.queue.lock();
                match queue.pending.first() {
                    None => queue.leader = false,
                    Some(next) => {
                        *next.state.lock() = State::Lead;
                        next.thread.unpark();
                    }
                }
                drop(queue);
                if let Err(panic) = ran {
                    resume_unwind(panic);
                }
                return;
            }
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
        Err(err) => return vec![Err(BackendError::classify(&err)); batch.len()],
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
                let why = BackendError::classify(&err);
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
                Err(err) => Err(BackendError::classify(&err)),
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
