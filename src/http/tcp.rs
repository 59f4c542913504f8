//! The fetcher's own transport for plain `http://` without a proxy: ureq's TCP transport, but
//! with a liveness probe of one system call instead of three.
//!
//! ureq probes a pooled connection before reusing it by switching the socket to non-blocking,
//! reading one byte and switching it back (`ioctl`, `recvfrom`, `ioctl`). Here the probe is one
//! `recv(MSG_PEEK | MSG_DONTWAIT)`, which leaves the socket blocking. Everything else is what
//! ureq's TCP connector and transport do; TLS and proxies keep ureq's own chain (`abort.rs`).
//!
//! Invariants:
//!
//! 1. This transport is used only for `http://` with no proxy configured (an environment proxy
//!    included): anything else goes through ureq's default connector chain.
//! 2. Connecting tries each resolved address in turn, each with an equal share of the connect
//!    time left (at least [`MIN_PER_ADDRESS`]); an address-specific failure (refused,
//!    unreachable) moves on to the next, a timeout past the connect budget ends the attempt as
//!    ureq's `Timeout` error with the budget's reason, any other failure ends it at once.
//! 3. Every write and read waits at most its `NextTimeout` (capped by the per-write or per-read
//!    timeout); the socket's timeout is set only when that value changes (a fixed per-write and
//!    per-read timeout: once per connection); a wait that runs out is ureq's `Timeout` error with
//!    that timeout's reason, and a read interrupted by a signal is retried within the time left.
//! 4. The probe ([`PlainTcp::is_open`]) reports open only when reading would block: a connection
//!    the server closed (EOF), one with bytes the client never asked for, or one whose probe
//!    fails is reported closed, and ureq drops it.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream};
use std::sync::Weak;
use std::time::{Duration, Instant};

use ureq::Timeout;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

use crate::sync::DynArc;

/// The least time one address gets to connect (invariant 2), as ureq's connector gives.
const MIN_PER_ADDRESS: Duration = Duration::from_millis(10);

/// Whether this transport applies to the connection `details` asks for (invariant 1).
pub(crate) fn applies(details: &ConnectionDetails<'_>) -> bool {
    details.uri.scheme_str() == Some("http") && details.config.proxy().is_none()
}

/// A connected plain TCP socket with ureq's buffers.
#[derive(Debug)]
pub(crate) struct PlainTcp {
    /// Shared only with the weak shutdown handles (`abort.rs`, the agent's own).
    stream: DynArc<TcpStream>,
    buffers: LazyBuffers,
    /// The socket's current timeouts (invariant 3).
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl PlainTcp {
    /// Connects to one of `details`' addresses within its connect timeout (invariant 2).
    pub(crate) fn connect(details: &ConnectionDetails<'_>) -> Result<PlainTcp, ureq::Error> {
        let budget = details.timeout.not_zero().map(|d| *d);
        let stream = connect_any(&details.addrs, budget, details.timeout.reason, connect_one)?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(PlainTcp {
            stream: DynArc::new(stream),
            buffers,
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// A weak handle that shuts the socket down (for the agent and the abort scope).
    pub(crate) fn shutdown_handle(&self) -> Weak<dyn ShutdownHandle> {
        DynArc::downgrade(&self.stream) as Weak<dyn ShutdownHandle>
    }

    /// Sets the socket's timeout with `set` when `wanted` differs from `current` (invariant 3).
    fn set_timeout(
        stream: &TcpStream,
        current: &mut Option<Duration>,
        wanted: Option<Duration>,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        if *current != wanted {
            set(stream, wanted)?;
            *current = wanted;
        }
        Ok(())
    }
}

/// Tries `addrs` in turn with `connect`, within `budget` (invariant 2); `reason` names the
/// budget in a timeout error.
fn connect_any<T>(
    addrs: &[SocketAddr],
    budget: Option<Duration>,
    reason: Timeout,
    mut connect: impl FnMut(SocketAddr, Option<Duration>) -> io::Result<T>,
) -> Result<T, ureq::Error> {
    let started = Instant::now();
    let mut last: Option<ureq::Error> = None;
    for (i, addr) in addrs.iter().enumerate() {
        let share = budget.map(|total| {
            let left = total.saturating_sub(started.elapsed());
            // The `addrs.len() - i` addresses still to try share what is left.
            (left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX)).max(MIN_PER_ADDRESS)
        });
        match connect(*addr, share) {
            Ok(connected) => return Ok(connected),
            Err(e) if is_timeout(&e) => {
                if budget.is_some_and(|total| started.elapsed() >= total) {
                    return Err(ureq::Error::Timeout(reason));
                }
                last = Some(ureq::Error::Timeout(Timeout::Connect));
            }
            Err(e) if is_address_specific(&e) => last = Some(ureq::Error::Io(e)),
            Err(e) => return Err(ureq::Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no address to connect to",
        ))
    }))
}

fn connect_one(addr: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
    match timeout {
        Some(timeout) => TcpStream::connect_timeout(&addr, timeout),
        None => TcpStream::connect(addr),
    }
}

/// A socket timeout: `EAGAIN` from `SO_RCVTIMEO`/`SO_SNDTIMEO` on Unix, `TimedOut` elsewhere.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn is_address_specific(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    )
}

/// A failed read or write as ureq's error: a socket timeout is the wait's `reason` (invariant 3).
fn failure(e: io::Error, reason: Timeout) -> ureq::Error {
    if is_timeout(&e) {
        ureq::Error::Timeout(reason)
    } else {
        ureq::Error::Io(e)
    }
}

/// `timeout` as the socket's timeout, or ureq's error when none is left (invariant 3).
fn time_left(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

impl Transport for PlainTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let wanted = time_left(timeout)?;
        Self::set_timeout(
            &self.stream,
            &mut self.write_timeout,
            wanted,
            TcpStream::set_write_timeout,
        )?;
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| failure(e, timeout.reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let wanted = time_left(timeout)?;
        Self::set_timeout(
            &self.stream,
            &mut self.read_timeout,
            wanted,
            TcpStream::set_read_timeout,
        )?;
        let started = Instant::now();
        let amount = loop {
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                Ok(amount) => break amount,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    // Invariant 3: retried within the time left.
                    let left = wanted.map(|w| w.saturating_sub(started.elapsed()));
                    if left.is_some_and(|left| left.is_zero()) {
                        return Err(ureq::Error::Timeout(timeout.reason));
                    }
                    Self::set_timeout(
                        &self.stream,
                        &mut self.read_timeout,
                        left,
                        TcpStream::set_read_timeout,
                    )?;
                }
                Err(e) => return Err(failure(e, timeout.reason)),
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Invariant 4: one peek that never blocks.
        let mut byte = [MaybeUninit::<u8>::uninit()];
        match socket2::SockRef::from(&*self.stream)
            .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // EOF (0), or bytes nobody asked for.
            Ok(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    fn error(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "scripted")
    }

    /// Runs `connect_any` over three addresses whose connects answer `script` in turn; returns
    /// the result and the timeout each attempt was given.
    fn run(
        budget: Option<Duration>,
        mut script: Vec<io::Result<u16>>,
    ) -> (Result<u16, ureq::Error>, Vec<Option<Duration>>) {
        script.reverse();
        let mut given = Vec::new();
        let result = connect_any(&addrs(3), budget, Timeout::Global, |_, share| {
            given.push(share);
            script.pop().expect("scripted")
        });
        (result, given)
    }

    #[test]
    fn an_address_specific_failure_moves_on() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::AddrNotAvailable,
        ] {
            let (result, given) = run(None, vec![Err(error(kind)), Ok(2)]);
            assert_eq!(result.unwrap(), 2, "{kind:?}");
            assert_eq!(given, [None, None]);
        }
    }

    #[test]
    fn a_timeout_within_the_budget_moves_on_and_each_address_gets_a_share() {
        // An hour: the few µs the walk itself takes never move a share across a bound below.
        let budget = Duration::from_secs(3600);
        let (result, given) = run(
            Some(budget),
            vec![Err(error(io::ErrorKind::TimedOut)), Ok(2)],
        );
        assert_eq!(result.unwrap(), 2);
        // Three addresses share the budget, then two what is left of it.
        let first = given[0].unwrap();
        assert!(first <= budget / 3 && first > budget / 4, "{first:?}");
        let second = given[1].unwrap();
        assert!(second <= budget / 2 && second > budget / 3, "{second:?}");
    }

    #[test]
    fn a_share_is_never_below_the_minimum() {
        let (_, given) = run(Some(Duration::from_millis(3)), vec![Ok(1)]);
        assert_eq!(given, [Some(MIN_PER_ADDRESS)]);
    }

    #[test]
    fn a_timeout_past_the_budget_is_the_budgets_timeout() {
        let (result, _) = run(
            Some(Duration::ZERO),
            vec![Err(error(io::ErrorKind::WouldBlock))],
        );
        assert!(matches!(result, Err(ureq::Error::Timeout(Timeout::Global))));
    }

    #[test]
    fn another_failure_ends_at_once_and_the_last_failure_is_reported() {
        let (result, given) = run(None, vec![Err(error(io::ErrorKind::PermissionDenied))]);
        assert!(
            matches!(result, Err(ureq::Error::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied)
        );
        assert_eq!(given.len(), 1);
        let refused = || Err(error(io::ErrorKind::ConnectionRefused));
        let (result, given) = run(None, vec![refused(), refused(), refused()]);
        assert!(matches!(&result, Err(e) if is_refused(e)));
        assert_eq!(given.len(), 3);
        let none = connect_any::<u16>(&[], None, Timeout::Global, |_, _| unreachable!());
        assert!(matches!(none, Err(ureq::Error::Io(_))));
    }

    fn is_refused(e: &ureq::Error) -> bool {
        matches!(e, ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// What one scripted connect answers, for the proptest.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Answer {
        Connected,
        Refused,
        TimedOut,
        Denied,
    }

    proptest::proptest! {
        /// Against a model of invariant 2 (a budget far longer than the test): the walk stops
        /// at the first connection or at the first failure that is neither address-specific
        /// nor a timeout, tries nothing after it, gives every attempt at least the minimum and
        /// at most the budget, and reports the last failure when every address failed.
        #[test]
        fn the_address_walk_matches_its_model(
            answers in proptest::collection::vec(
                proptest::sample::select(vec![
                    Answer::Connected, Answer::Refused, Answer::TimedOut, Answer::Denied,
                ]),
                0..6,
            ),
            budgeted in proptest::bool::ANY,
        ) {
            let budget = budgeted.then_some(Duration::from_secs(3600));
            let all: Vec<SocketAddr> = (1..=answers.len() as u16)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect();
            let mut given = Vec::new();
            let result = connect_any(&all, budget, Timeout::Global, |addr, share| {
                given.push(share);
                match answers[usize::from(addr.port()) - 1] {
                    Answer::Connected => Ok(addr.port()),
                    Answer::Refused => Err(error(io::ErrorKind::ConnectionRefused)),
                    Answer::TimedOut => Err(error(io::ErrorKind::TimedOut)),
                    Answer::Denied => Err(error(io::ErrorKind::PermissionDenied)),
                }
            });
            let stop = answers
                .iter()
                .position(|a| matches!(a, Answer::Connected | Answer::Denied));
            let tried = stop.map_or(answers.len(), |i| i + 1);
            proptest::prop_assert_eq!(given.len(), tried);
            for share in &given {
                match (budget, share) {
                    (None, None) => {}
                    (Some(total), Some(share)) => {
                        proptest::prop_assert!(*share >= MIN_PER_ADDRESS && *share <= total);
                    }
                    _ => proptest::prop_assert!(false, "share {share:?} for budget {budget:?}"),
                }
            }
            match (stop.map(|i| answers[i]), &result) {
                (Some(Answer::Connected), Ok(port)) => {
                    proptest::prop_assert_eq!(usize::from(*port), stop.unwrap_or(0) + 1);
                }
                (Some(Answer::Denied), Err(ureq::Error::Io(e))) => {
                    proptest::prop_assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
                }
                (None, Err(e)) => match answers.last() {
                    None | Some(Answer::Refused) => {
                        proptest::prop_assert!(is_refused(e), "{e:?}");
                    }
                    Some(Answer::TimedOut) => {
                        let connect = matches!(e, ureq::Error::Timeout(Timeout::Connect));
                        proptest::prop_assert!(connect, "{e:?}");
                    }
                    Some(other) => {
                        proptest::prop_assert!(false, "{other:?} cannot end a failed walk");
                    }
                },
                (expected, got) => {
                    proptest::prop_assert!(false, "expected {expected:?}, got {got:?}");
                }
            }
        }
    }

    #[test]
    fn a_timeout_within_the_budget_on_the_last_address_is_a_connect_timeout() {
        let timeout = || Err(error(io::ErrorKind::TimedOut));
        let (result, _) = run(
            Some(Duration::from_secs(3600)),
            vec![timeout(), timeout(), timeout()],
        );
        assert!(matches!(
            result,
            Err(ureq::Error::Timeout(Timeout::Connect))
        ));
    }
}
