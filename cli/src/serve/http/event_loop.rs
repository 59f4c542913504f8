//! One event-loop thread: accepts from the shared listener, drives its connections on
//! readiness, hands blocking requests to the pool and takes their answers back, and fires its
//! connections' deadlines. Everything here runs on the loop's thread except [`Job::run`].
//!
//! The hand-back protocol (pool worker → loop): a worker pushes its answer onto the loop's
//! `Completions` under its mutex and, if the queue was empty, wakes the loop's `mio::Waker`. The
//! loop takes the whole queue under the same mutex after every poll. An answer pushed onto a
//! non-empty queue needs no wake: the pusher that found it empty has woken (or will wake) the
//! loop, and the loop cannot have taken that earlier answer without taking the queue as it is
//! then, so it takes this one on that turn or the next. Modelled in loom:
//! `loom-tests/tests/serve_handoff.rs`.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tollgate::{CancelToken, WorkerPool, pool::SubmitError};

use super::conn::{Conn, Ctx, Drive};
use super::parse::{After, write_response};
use super::timers::Timers;
use super::{Admission, Config, ConnStats, Request, Response, Service, Timeout, error};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// How often a loop with jobs waiting for room in the pool retries them.
const BACKLOG_RETRY: Duration = Duration::from_millis(2);
/// The read buffer each loop shares among its connections.
const SCRATCH: usize = 64 * 1024;

/// Answers coming back from the pool.
struct Completions {
    queue: Mutex<Vec<Done>>,
    waker: Arc<Waker>,
}

struct Done {
    slot: usize,
    generation: u32,
    seq: u64,
    response: Response,
}

impl Completions {
    fn push(&self, done: Done) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = queue.is_empty();
        queue.push(done);
        drop(queue);
        if was_empty {
            let _ = self.waker.wake();
        }
    }

    fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A request for the pool.
struct Job {
    service: Arc<dyn Service>,
    request: Request,
    completions: Arc<Completions>,
    slot: usize,
    generation: u32,
    seq: u64,
}

impl Job {
    fn run(self) {
        let response = catch_unwind(AssertUnwindSafe(|| self.service.call(&self.request)))
            .unwrap_or_else(|_| error(500, "the handler failed"));
        self.completions.push(Done {
            slot: self.slot,
            generation: self.generation,
            seq: self.seq,
            response,
        });
    }
}

type PoolJob = Box<dyn FnOnce() + Send>;

/// One loop and its connections.
pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    completions: Arc<Completions>,
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    timers: Timers,
    backlog: VecDeque<PoolJob>,
    config: Config,
    pool: Arc<WorkerPool>,
    service: Arc<dyn Service>,
    admission: Arc<Admission>,
    stats: Arc<ConnStats>,
    shutdown: CancelToken,
    scratch: Vec<u8>,
    /// Connections that used up their turn with work left (driven again next turn).
    again: Vec<usize>,
}

impl EventLoop {
    pub(super) fn new(
        mut listener: TcpListener,
        config: Config,
        pool: Arc<WorkerPool>,
        service: Arc<dyn Service>,
        admission: Arc<Admission>,
        stats: Arc<ConnStats>,
        shutdown: CancelToken,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            completions: Arc::new(Completions {
                queue: Mutex::new(Vec::new()),
                waker,
            }),
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            timers: Timers::default(),
            backlog: VecDeque::new(),
            config,
            pool,
            service,
            admission,
            stats,
            shutdown,
            scratch: vec![0; SCRATCH],
            again: Vec::new(),
        })
    }

    /// Wakes the loop from another thread.
    pub(super) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.completions.waker)
    }

    /// Runs until shutdown has drained (module invariant 3).
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut touched: Vec<usize> = Vec::new();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let timeout = self.poll_timeout(drain_deadline);
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                // A broken poll cannot serve anyone: close everything and stop this loop.
                eprintln!("event loop stopped: {e}");
                break;
            }
            let now = Instant::now();
            touched.clear();
            touched.append(&mut self.again);
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(now, &mut touched),
                    WAKER => {}
                    Token(slot) => {
                        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                            conn.can_read |=
                                event.is_readable() || event.is_read_closed() || event.is_error();
                            conn.can_write |=
                                event.is_writable() || event.is_write_closed() || event.is_error();
                            touched.push(slot);
                        }
                    }
                }
            }
            for done in self.completions.take() {
                if self.generations.get(done.slot) == Some(&done.generation)
                    && let Some(conn) = self.conns[done.slot].as_mut()
                {
                    conn.complete(done.seq, done.response);
                    touched.push(done.slot);
                }
            }
            if drain_deadline.is_none() && self.shutdown.is_cancelled() {
                drain_deadline = Some(now + self.config.drain_timeout);
                // Stop accepting: this loop's handle on the listening socket closes.
                self.listener = None;
                for (slot, conn) in self.conns.iter_mut().enumerate() {
                    if let Some(conn) = conn {
                        conn.drain();
                        touched.push(slot);
                    }
                }
            }
            self.retry_backlog();
            let draining = drain_deadline.is_some();
            for &slot in &touched {
                self.drive(slot, now, draining);
            }
            self.fire_timers(now);
            if let Some(deadline) = drain_deadline
                && (self.conns.iter().all(Option::is_none) || now >= deadline)
            {
                break;
            }
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.stats.timed_out(Timeout::Drain);
                self.close(slot);
            }
        }
    }

    fn poll_timeout(&self, drain_deadline: Option<Instant>) -> Option<Duration> {
        let now = Instant::now();
        let mut until = self.timers.next();
        if let Some(d) = drain_deadline {
            until = Some(until.map_or(d, |t| t.min(d)));
        }
        let mut timeout = until.map(|t| t.saturating_duration_since(now));
        if !self.backlog.is_empty() {
            timeout = Some(timeout.map_or(BACKLOG_RETRY, |t| t.min(BACKLOG_RETRY)));
        }
        if !self.again.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        timeout
    }

    /// Accepts every pending connection (edge-triggered: until `WouldBlock`).
    fn accept(&mut self, now: Instant, touched: &mut Vec<usize>) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                // WouldBlock, or out of descriptors: the next connection's edge retries.
                Err(_) => return,
            };
            if !self.admission.admit(addr.ip()) {
                // Refused (module invariant 2): one best-effort answer, then closed.
                let mut out = Vec::new();
                write_response(&mut out, &error(503, "too many connections"), After::Close);
                let _ = stream.write(&out);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.generations.push(0);
                self.conns.len() - 1
            });
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.admission.release(addr.ip());
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(Conn::new(stream, addr.ip(), now));
            touched.push(slot);
        }
    }

    /// Drives one connection, then closes it or re-arms its deadline.
    fn drive(&mut self, slot: usize, now: Instant, draining: bool) {
        let generation = self.generations[slot];
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let (service, pool, completions, backlog) = (
            &self.service,
            &self.pool,
            &self.completions,
            &mut self.backlog,
        );
        let mut dispatch = |request: Request, seq: u64| -> Option<Response> {
            if !service.may_block(&request) {
                return Some(
                    catch_unwind(AssertUnwindSafe(|| service.call(&request)))
                        .unwrap_or_else(|_| error(500, "the handler failed")),
                );
            }
            let job = Job {
                service: Arc::clone(service),
                request,
                completions: Arc::clone(completions),
                slot,
                generation,
                seq,
            };
            // Module invariant 4: never wait for room in the pool here.
            if backlog.is_empty() {
                submit(pool, Box::new(move || job.run()), backlog);
            } else {
                backlog.push_back(Box::new(move || job.run()));
            }
            None
        };
        let mut ctx = Ctx {
            now,
            scratch: &mut self.scratch,
            draining,
            stats: &self.stats,
            dispatch: &mut dispatch,
        };
        let next = conn.drive(&mut ctx);
        if next == Drive::Close {
            self.close(slot);
            return;
        }
        if next == Drive::Again {
            self.again.push(slot);
        }
        if let Some((deadline, _)) = conn.deadline(&self.config) {
            self.timers.arm(&mut conn.armed, deadline, slot, generation);
        }
    }

    /// Submits what waits for room in the pool, in order, while there is room.
    fn retry_backlog(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            let mut rest = VecDeque::new();
            submit(&self.pool, job, &mut rest);
            if let Some(job) = rest.pop_front() {
                self.backlog.push_front(job);
                return;
            }
        }
    }

    /// Closes connections whose deadline has passed; re-arms the others.
    fn fire_timers(&mut self, now: Instant) {
        while let Some((slot, generation, at)) = self.timers.pop_due(now) {
            if self.generations.get(slot) != Some(&generation) {
                continue;
            }
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if !conn.armed.take_if(at) {
                continue;
            }
            match conn.deadline(&self.config) {
                Some((deadline, kind)) if deadline <= now => {
                    conn.expire(kind);
                    self.stats.timed_out(kind);
                    self.close(slot);
                }
                Some((deadline, _)) => {
                    self.timers.arm(&mut conn.armed, deadline, slot, generation);
                }
                None => {}
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            self.admission.release(conn.peer);
            self.generations[slot] = self.generations[slot].wrapping_add(1);
            self.free.push(slot);
            // Dropping the stream closes it (and takes it out of the poll).
        }
    }
}

/// Submits `job` without waiting: a full queue parks it at the back of `backlog`. The pool is
/// shut down only after every loop has stopped, so `Closed` cannot happen while a loop runs; if
/// it ever did, the job runs here rather than being lost.
fn submit(pool: &WorkerPool, job: PoolJob, backlog: &mut VecDeque<PoolJob>) {
    match pool.try_submit(job) {
        Ok(_detached) => {}
        Err(SubmitError::Full(job)) => backlog.push_back(job),
        Err(other) => other.into_job()(),
    }
}
