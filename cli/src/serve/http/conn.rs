//! One client connection's state machine, driven by its event loop: read what the socket has,
//! frame requests, dispatch them, serialise their answers in request order, write what the
//! socket takes. No call here blocks: the socket is non-blocking and edge-triggered, so the
//! connection remembers whether it may still read or write (`can_read`, `can_write`) until the
//! socket says `WouldBlock`.
//!
//! Invariants:
//! 1. `slots` holds one entry per parsed request not yet serialised, in request order; the
//!    front's sequence number is `first_seq`. An answer is serialised only from the front, so
//!    answers leave in request order whichever thread produced them.
//! 2. Reading stops (and the kernel's buffers push back on the client) while `slots` holds
//!    [`MAX_PIPELINE`] requests, the unwritten output exceeds [`MAX_OUTPUT`], or the unparsed
//!    input exceeds [`MAX_INPUT`]: a client cannot make the server buffer more than that.
//! 3. Once a request says `Connection: close`, is refused, or shutdown starts, no further
//!    request is parsed; the connection closes when its answers are written.
//! 4. At most one deadline applies at a time ([`Conn::deadline`]): write, then body, then head,
//!    then idle; a connection waiting only for the pool has none (the handler's own wait is
//!    bounded by its flags and by shutdown).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::parse::{self, After, Chunked, MAX_HEAD, Parsed, Skipped};
use super::timers::Armed;
use super::{Config, ConnStats, MAX_PIPELINE, Request, Response, Timeout, error};

/// Most unwritten output bytes before the connection stops parsing new requests.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Most unparsed input bytes before the connection stops reading.
pub const MAX_INPUT: usize = MAX_HEAD;
/// Output buffers larger than this are freed once written (idle connections stay small).
const KEEP_CAPACITY: usize = 4 * 1024;

/// Rounds of parse, write and read one `drive` call may make before the loop moves on.
pub const TURN_BUDGET: usize = 8;

/// What a connection wants after [`Conn::drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// Waiting for the socket, the pool or a deadline.
    Wait,
    /// Used up its budget with work left: drive it again on the loop's next turn.
    Again,
    /// Close it.
    Close,
}

/// An answer in request order: `None` while the pool works on it.
#[derive(Debug)]
struct Slot {
    response: Option<Response>,
    after: After,
}

/// A request whose chunked body is being skipped: it is dispatched once the body has ended well
/// (a malformed or oversized body is answered with its error instead, and never reaches a
/// handler).
#[derive(Debug)]
struct ChunkedBody {
    framing: Chunked,
    request: Request,
    after: After,
}

/// What the connection needs from its loop while it runs.
pub struct Ctx<'a> {
    /// The loop's clock reading for this turn.
    pub now: Instant,
    /// A read buffer shared by the loop's connections.
    pub scratch: &'a mut [u8],
    /// Shutdown has started: parse nothing new (invariant 3).
    pub draining: bool,
    /// Counters.
    pub stats: &'a ConnStats,
    /// Answers `request` (sequence number `seq`) now, or sends it to the pool (`None`; the
    /// answer comes back through [`Conn::complete`]).
    pub dispatch: &'a mut dyn FnMut(Request, u64) -> Option<Response>,
}

/// A client connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket (registered with the loop's poll).
    pub stream: TcpStream,
    /// The client's address (for the per-IP cap).
    pub peer: IpAddr,
    /// The loop's timer entry for this connection.
    pub armed: Armed,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    slots: VecDeque<Slot>,
    first_seq: u64,
    body_left: u64,
    chunked: Option<ChunkedBody>,
    /// No more requests will be parsed (invariant 3).
    no_more: bool,
    /// A serialised answer said `Connection: close`: close once it is written.
    closing: bool,
    peer_closed: bool,
    /// Edge-triggered readiness not yet used up.
    pub can_read: bool,
    /// Edge-triggered readiness not yet used up.
    pub can_write: bool,
    /// No request has started yet: the head deadline runs from the accept.
    fresh: bool,
    since: Instant,
    write_since: Option<Instant>,
}

impl Conn {
    /// A connection accepted at `now`.
    pub fn new(stream: TcpStream, peer: IpAddr, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            armed: Armed::default(),
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            slots: VecDeque::new(),
            first_seq: 0,
            body_left: 0,
            chunked: None,
            no_more: false,
            closing: false,
            peer_closed: false,
            can_read: false,
            can_write: false,
            fresh: true,
            since: now,
            write_since: None,
        }
    }

    /// Shutdown started: finish what was parsed, parse nothing more (invariant 3). A request
    /// still receiving its chunked body was not dispatched: it is dropped with the connection.
    pub fn drain(&mut self) {
        self.no_more = true;
        self.input = Vec::new();
        self.chunked = None;
    }

    /// A request body is still arriving.
    fn in_body(&self) -> bool {
        self.body_left > 0 || self.chunked.is_some()
    }

    /// The pool's answer to request `seq`.
    pub fn complete(&mut self, seq: u64, response: Response) {
        let Some(index) = seq.checked_sub(self.first_seq) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(index as usize) {
            slot.response = Some(response);
        }
    }

    /// When this connection must have made progress, and what it is waiting for (invariant 4).
    pub fn deadline(&self, config: &Config) -> Option<(Instant, Timeout)> {
        if let Some(since) = self.write_since {
            return Some((since + config.write_timeout, Timeout::Write));
        }
        if self.in_body() {
            return Some((self.since + config.body_timeout, Timeout::Body));
        }
        if !self.input.is_empty() || (self.fresh && !self.no_more) {
            return Some((self.since + config.head_timeout, Timeout::Head));
        }
        if self.slots.is_empty() {
            return Some((self.since + config.idle_timeout, Timeout::Idle));
        }
        None
    }

    /// A deadline passed: answers 408 if the client is mid-request and owed nothing else (one
    /// non-blocking write, best effort); the caller closes the connection.
    pub fn expire(&mut self, kind: Timeout) {
        let mid_request = !self.input.is_empty() || self.in_body();
        if matches!(kind, Timeout::Head | Timeout::Body)
            && mid_request
            && self.slots.is_empty()
            && self.written == self.output.len()
        {
            let mut out = Vec::new();
            crate::serve::access_log::rejected(self.peer, 408, "request took too long");
            parse::write_response(&mut out, &error(408, "request took too long"), After::Close);
            let _ = self.stream.write(&out);
        }
    }

    /// Does the work the socket and the answers allow, up to [`TURN_BUDGET`] rounds so one busy
    /// client cannot starve the loop's others.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Drive {
        for _ in 0..TURN_BUDGET {
            let mut progress = self.parse_requests(ctx);
            progress |= self.serialise_answers(ctx);
            match self.write_out(ctx.now) {
                Ok(wrote) => progress |= wrote,
                Err(_) => return Drive::Close,
            }
            if self.closing && self.written == self.output.len() {
                return Drive::Close;
            }
            match self.read_in(ctx) {
                Ok(read) => progress |= read,
                Err(_) => return Drive::Close,
            }
            if !progress {
                let owed = !self.slots.is_empty() || self.written < self.output.len();
                // A chunked body still to come carries a request not yet dispatched.
                let awaited = self.chunked.is_some() && !self.peer_closed;
                if !owed && !awaited && (self.peer_closed || self.no_more) {
                    // Nothing more will be asked, or nothing more can be answered.
                    return Drive::Close;
                }
                return Drive::Wait;
            }
        }
        Drive::Again
    }

    /// Frames and dispatches the requests in `input` (invariants 2 and 3).
    fn parse_requests(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut progress = false;
        loop {
            if let Some(mut body) = self.chunked.take() {
                match body.framing.skip(&self.input) {
                    Skipped::Partial(n) => {
                        self.input.drain(..n);
                        self.chunked = Some(body);
                        return progress || n > 0;
                    }
                    Skipped::Done(n) => {
                        self.input.drain(..n);
                        self.since = ctx.now;
                        self.dispatch(ctx, body.request, body.after);
                        progress = true;
                        continue;
                    }
                    Skipped::Reject(status, message) => {
                        self.reject(ctx, status, message);
                        return true;
                    }
                }
            }
            if self.body_left > 0 {
                let n = self.body_left.min(self.input.len() as u64) as usize;
                if n == 0 {
                    return progress;
                }
                self.input.drain(..n);
                self.body_left -= n as u64;
                progress = true;
                if self.body_left > 0 {
                    return progress;
                }
                self.since = ctx.now;
                continue;
            }
            if self.no_more
                || ctx.draining
                || self.input.is_empty()
                || self.slots.len() >= MAX_PIPELINE
                || self.output.len() - self.written >= MAX_OUTPUT
            {
                return progress;
            }
            match parse::parse(&self.input, Some(self.peer)) {
                Parsed::Partial => return progress,
                Parsed::Reject(status, message) => {
                    self.reject(ctx, status, message);
                    return true;
                }
                Parsed::Head(head) => {
                    progress = true;
                    self.fresh = false;
                    self.input.drain(..head.len);
                    self.since = ctx.now;
                    self.body_left = head.body;
                    let body_to_come = if head.chunked {
                        self.input.is_empty()
                    } else {
                        (self.input.len() as u64) < head.body
                    };
                    if head.expect_continue && body_to_come && self.slots.is_empty() {
                        // Only when every earlier answer is out: an interim answer must not
                        // overtake them.
                        self.output
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let after = match (head.keep_alive, head.http10) {
                        (false, _) => {
                            self.no_more = true;
                            After::Close
                        }
                        (true, false) => After::KeepAlive,
                        (true, true) => After::KeepAlive10,
                    };
                    if head.chunked {
                        self.chunked = Some(ChunkedBody {
                            framing: Chunked::default(),
                            request: head.request,
                            after,
                        });
                    } else {
                        self.dispatch(ctx, head.request, after);
                    }
                }
            }
        }
    }

    /// Hands `request` to its handler, its answer to come in request order (invariant 1).
    fn dispatch(&mut self, ctx: &mut Ctx<'_>, request: Request, after: After) {
        let seq = self.first_seq + self.slots.len() as u64;
        let response = (ctx.dispatch)(request, seq);
        self.slots.push_back(Slot { response, after });
    }

    /// Answers a request that cannot be framed (its head or its chunked body) and parses
    /// nothing more (invariant 3).
    fn reject(&mut self, ctx: &mut Ctx<'_>, status: u16, message: &'static str) {
        ctx.stats.rejected_head();
        crate::serve::access_log::rejected(self.peer, status, message);
        self.fresh = false;
        self.no_more = true;
        self.chunked = None;
        self.input = Vec::new();
        self.slots.push_back(Slot {
            response: Some(error(status, message)),
            after: After::Close,
        });
    }

    /// Moves finished answers from the front of `slots` to `output` (invariant 1).
    fn serialise_answers(&mut self, ctx: &Ctx<'_>) -> bool {
        let mut progress = false;
        while self.slots.front().is_some_and(|s| s.response.is_some()) {
            let Some(Slot { response, after }) = self.slots.pop_front() else {
                break;
            };
            let Some(response) = response else { break };
            self.first_seq += 1;
            // Shutdown: the last answer owed is the connection's last.
            let last = (ctx.draining || self.no_more) && self.slots.is_empty();
            let after = if after == After::Close || (last && ctx.draining) {
                After::Close
            } else {
                after
            };
            parse::write_response(&mut self.output, &response, after);
            super::keep_head(response.head);
            if after == After::Close {
                self.closing = true;
                self.slots.clear();
                self.input = Vec::new();
            }
            progress = true;
        }
        progress
    }

    /// Writes `output` while the socket takes it.
    fn write_out(&mut self, now: Instant) -> io::Result<bool> {
        let mut progress = false;
        while self.written < self.output.len() && self.can_write {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.can_write = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            if !self.output.is_empty() {
                self.output.clear();
                self.written = 0;
                if self.output.capacity() > KEEP_CAPACITY {
                    self.output = Vec::new();
                }
                if self.slots.is_empty() && self.input.is_empty() && !self.in_body() {
                    // Idle from now.
                    self.since = now;
                }
            }
            self.write_since = None;
        } else if self.write_since.is_none() {
            self.write_since = Some(now);
        }
        Ok(progress)
    }

    /// Reads once into `input` if the socket may have bytes and there is room (invariant 2).
    fn read_in(&mut self, ctx: &mut Ctx<'_>) -> io::Result<bool> {
        let room = self.input.len() < MAX_INPUT
            && self.slots.len() < MAX_PIPELINE
            && self.output.len() - self.written < MAX_OUTPUT;
        // A body still arriving is read even after its request said `Connection: close`: the
        // answer waits for a chunked body's end, and closing on unread bytes would reset the
        // connection under the answer.
        let reading = !ctx.draining && (!self.no_more || self.in_body());
        if !self.can_read || self.peer_closed || !reading || !room {
            return Ok(false);
        }
        match self.stream.read(ctx.scratch) {
            Ok(0) => {
                self.peer_closed = true;
                Ok(true)
            }
            Ok(n) => {
                if self.input.is_empty() && !self.in_body() && !self.fresh {
                    // The first byte of a new head: its deadline starts now.
                    self.since = ctx.now;
                }
                self.input.extend_from_slice(&ctx.scratch[..n]);
                if n < ctx.scratch.len() {
                    // A short read emptied the socket's buffer: bytes arriving later raise a new
                    // edge, so the `WouldBlock` read that would confirm it can be skipped (one
                    // syscall per request fewer; tokio does the same).
                    self.can_read = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.can_read = false;
                if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
                    self.input = Vec::new();
                }
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }
}
