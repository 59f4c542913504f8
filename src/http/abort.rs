//! Aborting one request's sockets without touching the rest of the agent: ureq's side of the
//! scope protocol (`scope.rs`).
//!
//! `ureq::Agent::shutdown()` closes every connection of an agent and all its clones, for good. To
//! cancel one `fetch` and keep the fetcher, the agent is built with [`AbortableConnector`]: it
//! wraps every transport it makes in an [`AbortableTransport`] that knows its socket's shutdown
//! handle (the fetcher's own plain-TCP transport hands it over directly; on ureq's chain it is
//! captured from the `ConnectionDetails::register_shutdown` hook, which ureq's TCP connector
//! calls right after connecting, before TLS), and enlists the socket in the calling thread's
//! current scope before each I/O step (`scope.rs` invariant 1).
//!
//! Invariant: a connection is probed for liveness once between two requests, not twice. ureq
//! asks `is_open` when a request hands the connection back to its pool (right after reading the
//! response) and again when the next request checks it out; a probe costs system calls (ureq's
//! TCP probe three, the fetcher's own transport's one: `tcp.rs`). The first question comes right
//! after the socket carried the request's own I/O, so it is answered from that I/O; the second,
//! asked after the connection idled, always probes the socket. What the first probe would catch —
//! the server closed the connection, or sent bytes after the body — is still there for the second
//! to see, so such a connection is never reused.

use std::fmt;
use std::sync::Weak;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, ShutdownHandle, Transport,
};

use super::scope::{Shutter, Socket, enlist_current};
use crate::sync::Arc;

/// The fetcher's connector: its own plain TCP transport for `http://` without a proxy
/// (`tcp.rs`), ureq's default chain (TCP, then TLS; proxies) otherwise, every transport made
/// abortable.
#[derive(Debug, Default)]
pub(crate) struct AbortableConnector {
    inner: DefaultConnector,
}

impl Connector<()> for AbortableConnector {
    type Out = AbortableTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<AbortableTransport>, ureq::Error> {
        let socket = Arc::new(Socket::default());
        // Enlist before connecting: an abort during connect or TLS marks the socket shut, and
        // the handle registered below is then shut the moment it exists (`scope.rs` invariant 2).
        let mut enlisted_in = 0;
        enlist_current(&socket, &mut enlisted_in);
        #[cfg(unix)]
        if super::tcp::applies(details) {
            let tcp = super::tcp::PlainTcp::connect(details)?;
            // ureq's own registration first (it fails once the agent is shut down), so
            // Agent::shutdown still reaches the socket; then the scope's.
            (details.register_shutdown)(tcp.shutdown_handle())?;
            socket.add_handle(shutter(tcp.shutdown_handle()));
            return Ok(Some(AbortableTransport {
                inner: Box::new(tcp),
                socket,
                enlisted_in,
                carried: false,
            }));
        }
        let forward = details.register_shutdown.clone();
        let captured = socket.clone();
        let ours = ConnectionDetails {
            uri: details.uri,
            addrs: details.addrs.clone(),
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: std::sync::Arc::new(move |handle: Weak<dyn ShutdownHandle>| {
                // Keep ureq's own registration, so Agent::shutdown still works.
                forward(handle.clone())?;
                captured.add_handle(shutter(handle));
                Ok(())
            }),
        };
        let transport = self.inner.connect(&ours, chained)?;
        Ok(transport.map(|inner| AbortableTransport {
            inner,
            socket,
            enlisted_in,
            carried: false,
        }))
    }
}

/// The scope's handle on a socket: shuts it down if it is still alive (`scope.rs` invariant 5).
fn shutter(handle: Weak<dyn ShutdownHandle>) -> Shutter {
    Box::new(move || {
        if let Some(handle) = handle.upgrade() {
            handle.shutdown();
        }
    })
}

/// A transport whose socket a request's [`AbortScope`] can shut.
pub(crate) struct AbortableTransport {
    inner: Box<dyn Transport>,
    socket: Arc<Socket>,
    /// Id of the last scope the socket was enlisted in (0: none).
    enlisted_in: u64,
    /// The socket carried I/O since the last `is_open` (the module's invariant).
    carried: bool,
}

impl fmt::Debug for AbortableTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortableTransport")
            .field("inner", &self.inner)
            .field("enlisted_in", &self.enlisted_in)
            .finish()
    }
}

impl Transport for AbortableTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        enlist_current(&self.socket, &mut self.enlisted_in);
        self.carried = true;
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        enlist_current(&self.socket, &mut self.enlisted_in);
        self.carried = true;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        // Pool checkout runs this on the requesting thread: claim the socket first (`scope.rs`
        // invariant 2).
        enlist_current(&self.socket, &mut self.enlisted_in);
        // `scope.rs` invariant 4: a shut socket may still look open for a moment (or read as a
        // clean EOF).
        if self.socket.is_shut() {
            return false;
        }
        // The module's invariant: the hand-back right after the request's I/O is answered by
        // that I/O; the checkout after an idle spell probes.
        std::mem::take(&mut self.carried) || self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
