//! Aborting one request's sockets without touching the rest of the agent.
//!
//! `ureq::Agent::shutdown()` closes every connection of an agent and all its clones, for good. To
//! cancel one `fetch` and keep the fetcher, the agent is built with [`AbortableConnector`]: it
//! wraps every transport it makes in an [`AbortableTransport`] that knows its socket's shutdown
//! handle (captured from ureq's `ConnectionDetails::register_shutdown` hook, which ureq's TCP
//! connector calls right after connecting, before TLS). A `fetch` makes an [`AbortScope`] the
//! calling thread's current scope; before each I/O step on the calling thread, the transport
//! enlists its socket in that scope. The request's `CancelToken::on_cancel` callback calls
//! [`AbortScope::abort`], which shuts down only the sockets enlisted in that scope: a blocked
//! read or write returns at once, on that connection alone.
//!
//! Invariants:
//!
//! 1. A scope is current on exactly one thread, for the duration of one `fetch`; ureq does all
//!    connection I/O of a request on the calling thread, so every socket the request touches is
//!    enlisted in its scope before it blocks on it (at connect, at pool checkout through
//!    `is_open`, and before every write and read).
//! 2. A socket is *owned* by the last scope it was enlisted in. An abort shuts only the sockets
//!    its scope still owns, so a late abort of a finished request never shuts a pooled connection
//!    that another request has checked out since (checkout enlists it in the new scope first).
//! 3. Locks are taken in the order pool (ureq's) → scope → socket, never the other way. Under the
//!    scope lock, `enlist` claims the socket and `abort` marks the scope aborted: so a socket the
//!    request uses after an abort is shut by `enlist`, one used before by `abort`; and a handle
//!    registered after its socket was shut is shut at once by `add_handle`.
//! 4. A shut socket stays shut: its transport reports `is_open() == false`, so ureq's pool drops
//!    it instead of handing it to the next request.
//! 5. Shutdown handles are `Weak`: an abort never keeps a connection alive, and the socket closes
//!    as usual when ureq drops its transport.
//! 6. A connection is probed for liveness once between two requests, not twice. ureq asks
//!    `is_open` when a request hands the connection back to its pool (right after reading the
//!    response) and again when the next request checks it out; its TCP probe is three system
//!    calls (non-blocking on, a one-byte peek, non-blocking off). The first question comes right
//!    after the socket carried the request's own I/O, so it is answered from that I/O; the
//!    second, asked after the connection idled, always probes the socket. What the first probe
//!    would catch — the server closed the connection, or sent bytes after the body — is still
//!    there for the second to see, so such a connection is never reused.
//! 7. A request's scope is new to every socket, yet costs no allocation and no shared write:
//!    a thread reuses its last scope when nothing else holds it any more (`Arc::get_mut`: a
//!    cancellation callback still running keeps it, and the request then gets a fresh one),
//!    under a new id. Ids are unique across threads because each thread hands out ids from a
//!    block of [`ID_BLOCK`] it alone took from [`NEXT_SCOPE`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Weak;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, ShutdownHandle, Transport,
};

use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

thread_local! {
    /// The scope of the `fetch` running on this thread, if any (invariant 1).
    static CURRENT: RefCell<Option<Arc<AbortScope>>> = const { RefCell::new(None) };
    /// The scope of this thread's last `fetch`, kept to be reused by the next (invariant 7).
    static SPARE: Cell<Option<Arc<AbortScope>>> = const { Cell::new(None) };
    /// Scope ids this thread may hand out: the next, and the end of its block (invariant 7).
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Source of blocks of scope ids; 0 means "not enlisted anywhere yet".
static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);

/// Scope ids a thread takes from [`NEXT_SCOPE`] at a time (invariant 7).
const ID_BLOCK: u64 = 1 << 16;

/// The sockets one request has used, and whether it was aborted.
pub(crate) struct AbortScope {
    /// Unique per scope, never 0. Changed only while the scope is unshared (invariant 7).
    id: u64,
    state: Mutex<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    aborted: bool,
    sockets: Vec<Arc<Socket>>,
}

impl AbortScope {
    /// Makes a new scope the calling thread's current one until the guard is dropped.
    pub(crate) fn enter() -> EnteredScope {
        let id = next_id();
        // Invariant 7: the last scope again when this thread alone holds it, under a new id.
        let scope = SPARE
            .with(Cell::take)
            .and_then(|spare| Self::renew(spare, id))
            .unwrap_or_else(|| {
                Arc::new(AbortScope {
                    id,
                    state: Mutex::new(ScopeState::default()),
                })
            });
        let previous = CURRENT.with(|current| current.replace(Some(scope.clone())));
        EnteredScope { scope, previous }
    }

    /// `scope` made a new scope with id `id`, if nothing else holds it (invariant 7).
    fn renew(mut scope: Arc<AbortScope>, id: u64) -> Option<Arc<AbortScope>> {
        let unshared = Arc::get_mut(&mut scope)?;
        unshared.id = id;
        let mut state = unshared.state.lock();
        state.aborted = false;
        state.sockets.clear();
        drop(state);
        Some(scope)
    }

    /// Shuts every socket this scope owns now or enlists later (invariants 2 and 3).
    pub(crate) fn abort(&self) {
        let mut state = self.state.lock();
        state.aborted = true;
        for socket in std::mem::take(&mut state.sockets) {
            socket.shut_if_owned_by(self.id);
        }
    }

    fn enlist(&self, socket: &Arc<Socket>) {
        let mut state = self.state.lock();
        socket.claim(self.id);
        if state.aborted {
            socket.shut_if_owned_by(self.id);
        } else {
            state.sockets.push(socket.clone());
        }
    }
}

/// A scope id no other scope has had (invariant 7).
fn next_id() -> u64 {
    IDS.with(|ids| {
        let (mut next, mut end) = ids.get();
        if next == end {
            // Relaxed: only the uniqueness of the blocks matters, which fetch_add gives alone.
            next = NEXT_SCOPE.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        ids.set((next + 1, end));
        next
    })
}

/// Enlists `socket` in the calling thread's current scope, unless it is already enlisted in it
/// (`enlisted_in` holds the id of the last scope it joined). Cheap when nothing changes: one
/// thread-local read and a compare.
fn enlist_current(socket: &Arc<Socket>, enlisted_in: &mut u64) {
    CURRENT.with(|current| {
        if let Some(scope) = &*current.borrow()
            && scope.id != *enlisted_in
        {
            *enlisted_in = scope.id;
            scope.enlist(socket);
        }
    });
}

/// Guard of [`AbortScope::enter`]: restores the previous scope when dropped.
pub(crate) struct EnteredScope {
    scope: Arc<AbortScope>,
    previous: Option<Arc<AbortScope>>,
}

impl EnteredScope {
    /// The scope, for a cancellation callback.
    pub(crate) fn scope(&self) -> Arc<AbortScope> {
        self.scope.clone()
    }
}

impl Drop for EnteredScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        // Kept for this thread's next request (invariant 7); `try_with`: a thread being torn
        // down simply drops it.
        let _ = SPARE.try_with(|spare| spare.set(Some(self.scope.clone())));
    }
}

/// One connection's shutdown handles (usually one: the TCP socket under any TLS).
#[derive(Default)]
struct Socket {
    state: Mutex<SocketState>,
}

#[derive(Default)]
struct SocketState {
    /// Set once, never cleared (invariant 4).
    shut: bool,
    /// Id of the scope that owns the socket (invariant 2); 0 before any.
    owner: u64,
    handles: Vec<Weak<dyn ShutdownHandle>>,
}

impl Socket {
    fn claim(&self, scope: u64) {
        self.state.lock().owner = scope;
    }

    fn shut_if_owned_by(&self, scope: u64) {
        let handles = {
            let mut state = self.state.lock();
            if state.owner != scope {
                return;
            }
            state.shut = true;
            std::mem::take(&mut state.handles)
        };
        // A shutdown is a syscall on a live socket: done outside the lock.
        for handle in handles.iter().filter_map(Weak::upgrade) {
            handle.shutdown();
        }
    }

    fn add_handle(&self, handle: Weak<dyn ShutdownHandle>) {
        let mut state = self.state.lock();
        if state.shut {
            drop(state);
            if let Some(handle) = handle.upgrade() {
                handle.shutdown();
            }
        } else {
            state.handles.push(handle);
        }
    }

    fn is_shut(&self) -> bool {
        self.state.lock().shut
    }
}

/// ureq's default connector chain (TCP, then TLS), with every transport made abortable.
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
        // the handle registered below is then shut the moment it exists (invariant 2).
        let mut enlisted_in = 0;
        enlist_current(&socket, &mut enlisted_in);
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
                captured.add_handle(handle);
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

/// A transport whose socket a request's [`AbortScope`] can shut.
pub(crate) struct AbortableTransport {
    inner: Box<dyn Transport>,
    socket: Arc<Socket>,
    /// Id of the last scope the socket was enlisted in (0: none).
    enlisted_in: u64,
    /// The socket carried I/O since the last `is_open` (invariant 6).
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
        // Pool checkout runs this on the requesting thread: claim the socket first (invariant 2).
        enlist_current(&self.socket, &mut self.enlisted_in);
        // Invariant 4: a shut socket may still look open for a moment (or read as a clean EOF).
        if self.socket.is_shut() {
            return false;
        }
        // Invariant 6: the hand-back right after the request's I/O is answered by that I/O;
        // the checkout after an idle spell probes.
        std::mem::take(&mut self.carried) || self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::AtomicUsize;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl ShutdownHandle for Counting {
        fn shutdown(&self) {
            // SeqCst: test code, read back by `shutdowns` on the same thread.
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn handle() -> (std::sync::Arc<Counting>, Weak<dyn ShutdownHandle>) {
        let strong = std::sync::Arc::new(Counting::default());
        let weak = std::sync::Arc::downgrade(&strong) as Weak<dyn ShutdownHandle>;
        (strong, weak)
    }

    fn shutdowns(h: &Counting) -> usize {
        h.0.load(Ordering::SeqCst)
    }

    #[test]
    fn abort_shuts_enlisted_sockets_only() {
        let (h1, w1) = handle();
        let (h2, w2) = handle();
        let (s1, s2) = (Arc::new(Socket::default()), Arc::new(Socket::default()));
        s1.add_handle(w1);
        s2.add_handle(w2);
        let (mut e1, mut e2) = (0, 0);
        let entered = AbortScope::enter();
        enlist_current(&s1, &mut e1);
        enlist_current(&s1, &mut e1); // once per scope
        assert_eq!(entered.scope.state.lock().sockets.len(), 1);
        entered.scope().abort();
        assert_eq!((shutdowns(&h1), shutdowns(&h2)), (1, 0));
        assert!(s1.is_shut() && !s2.is_shut());
        // Enlisting after the abort shuts at once.
        enlist_current(&s2, &mut e2);
        assert_eq!(shutdowns(&h2), 1);
        drop(entered);
        // No scope: nothing happens.
        let (s3, mut e3) = (Arc::new(Socket::default()), 0);
        enlist_current(&s3, &mut e3);
        assert_eq!(e3, 0);
    }

    #[test]
    fn handle_registered_after_abort_is_shut() {
        let socket = Arc::new(Socket::default());
        let entered = AbortScope::enter();
        let mut e = 0;
        enlist_current(&socket, &mut e);
        entered.scope().abort();
        let (h, w) = handle();
        socket.add_handle(w);
        assert_eq!(shutdowns(&h), 1);
    }

    #[test]
    fn late_abort_spares_a_socket_another_scope_claimed() {
        let (h, w) = handle();
        let socket = Arc::new(Socket::default());
        socket.add_handle(w);
        let mut e = 0;
        let first = AbortScope::enter();
        enlist_current(&socket, &mut e);
        let first_scope = first.scope();
        drop(first);
        // The connection went back to the pool and another request checked it out.
        let second = AbortScope::enter();
        enlist_current(&socket, &mut e);
        first_scope.abort();
        assert_eq!(shutdowns(&h), 0);
        assert!(!socket.is_shut());
        second.scope().abort();
        assert_eq!(shutdowns(&h), 1);
    }

    #[test]
    fn a_reused_scope_is_new_to_every_socket() {
        // Invariant 7: the thread's next request reuses the scope, under a new id, with no
        // socket and not aborted; a late abort of the old request shuts nothing of the new one.
        let (h, w) = handle();
        let socket = Arc::new(Socket::default());
        socket.add_handle(w);
        let mut e = 0;
        let first = AbortScope::enter();
        let (first_id, first_ptr) = (first.scope.id, Arc::as_ptr(&first.scope));
        enlist_current(&socket, &mut e);
        first.scope().abort();
        assert_eq!(shutdowns(&h), 1);
        drop(first);
        let second = AbortScope::enter();
        assert_eq!(Arc::as_ptr(&second.scope), first_ptr, "reused");
        assert_ne!(second.scope.id, first_id);
        let fresh = Arc::new(Socket::default());
        let (h2, w2) = handle();
        fresh.add_handle(w2);
        let mut e2 = 0;
        enlist_current(&fresh, &mut e2);
        assert_eq!(e2, second.scope.id);
        assert_eq!(shutdowns(&h2), 0, "the reused scope is not aborted");
        assert_eq!(second.scope.state.lock().sockets.len(), 1);
        drop(second);
        // A scope something else still holds (a cancel callback running late) is not reused.
        let third = AbortScope::enter();
        let held = third.scope();
        let third_ptr = Arc::as_ptr(&third.scope);
        drop(third);
        let fourth = AbortScope::enter();
        assert_ne!(Arc::as_ptr(&fourth.scope), third_ptr);
        held.abort();
        assert_eq!(shutdowns(&h2), 0);
        drop(fourth);
    }

    #[test]
    fn scope_ids_are_unique_across_threads() {
        let ids: Vec<u64> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| next_id()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(!ids.contains(&0));
    }

    #[test]
    fn scopes_nest_and_restore() {
        let outer = AbortScope::enter();
        let outer_id = outer.scope.id;
        {
            let inner = AbortScope::enter();
            assert_ne!(inner.scope.id, outer_id);
            let now = CURRENT.with(|c| c.borrow().as_ref().map(|s| s.id));
            assert_eq!(now, Some(inner.scope.id));
        }
        let now = CURRENT.with(|c| c.borrow().as_ref().map(|s| s.id));
        assert_eq!(now, Some(outer_id));
        drop(outer);
        assert!(CURRENT.with(|c| c.borrow().is_none()));
    }
}
