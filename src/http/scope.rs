//! Which sockets one request may shut: the scope protocol under `abort.rs`'s transports, apart
//! from ureq so that loom can model it (`loom-tests/tests/http_scope.rs`; exported alone as
//! `tollgate::http_scope` in loom builds).
//!
//! A `fetch` makes an [`AbortScope`] the calling thread's current scope; before each I/O step on
//! the calling thread, the transport enlists its [`Socket`] in that scope ([`enlist_current`]).
//! The request's `CancelToken::on_cancel` callback calls [`AbortScope::abort`], which shuts down
//! only the sockets enlisted in that scope: a blocked read or write returns at once, on that
//! connection alone.
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
//! 5. Shutdown handles are held weakly (a [`Shutter`] upgrades ureq's `Weak` handle): an abort
//!    never keeps a connection alive, and the socket closes as usual when ureq drops its
//!    transport.
//! 6. A request's scope is new to every socket, yet costs no allocation and no shared write:
//!    a thread reuses its last scope when nothing else holds it any more (`Arc::get_mut`: a
//!    cancellation callback still running keeps it, and the request then gets a fresh one),
//!    under a new id. Ids are unique across threads because each thread hands out ids from a
//!    block of [`ID_BLOCK`] it alone took from [`NEXT_SCOPE`].

// `pub` so that loom builds can export this file alone; in other builds it is private to `http`.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use std::cell::{Cell, RefCell};
use std::fmt;

use crate::sync::{Arc, Mutex, Ordering, StaticAtomicU64, renewed, thread_local};

#[cfg(not(loom))]
thread_local! {
    /// The scope of the `fetch` running on this thread, if any (invariant 1).
    static CURRENT: RefCell<Option<Arc<AbortScope>>> = const { RefCell::new(None) };
    /// The scope of this thread's last `fetch`, kept to be reused by the next (invariant 6).
    static SPARE: Cell<Option<Arc<AbortScope>>> = const { Cell::new(None) };
    /// Scope ids this thread may hand out: the next, and the end of its block (invariant 6).
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
thread_local! {
    static CURRENT: RefCell<Option<Arc<AbortScope>>> = RefCell::new(None);
    static SPARE: Cell<Option<Arc<AbortScope>>> = Cell::new(None);
    static IDS: Cell<(u64, u64)> = Cell::new((0, 0));
}

/// Source of blocks of scope ids; 0 means "not enlisted anywhere yet".
static NEXT_SCOPE: StaticAtomicU64 = StaticAtomicU64::new(1);

/// Scope ids a thread takes from [`NEXT_SCOPE`] at a time (invariant 6).
const ID_BLOCK: u64 = 1 << 16;

/// The sockets one request has used, and whether it was aborted.
pub struct AbortScope {
    /// Unique per scope, never 0. Changed only while the scope is unshared (invariant 6).
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
    pub fn enter() -> EnteredScope {
        let id = next_id();
        // Invariant 7: the last scope again when this thread alone holds it, under a new id.
        let scope = SPARE
            .with(Cell::take)
            .and_then(|spare| {
                renewed(spare, |unshared| {
                    unshared.id = id;
                    let state = &mut *unshared.state.lock();
                    state.aborted = false;
                    state.sockets.clear();
                })
            })
            .unwrap_or_else(|| {
                Arc::new(AbortScope {
                    id,
                    state: Mutex::new(ScopeState::default()),
                })
            });
        let previous = CURRENT.with(|current| current.replace(Some(scope.clone())));
        EnteredScope { scope, previous }
    }

    /// Shuts every socket this scope owns now or enlists later (invariants 2 and 3).
    pub fn abort(&self) {
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

impl fmt::Debug for AbortScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortScope")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EnteredScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnteredScope")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Socket")
            .field("shut", &state.shut)
            .field("owner", &state.owner)
            .field("handles", &state.handles.len())
            .finish()
    }
}

/// A scope id no other scope has had (invariant 6).
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
pub fn enlist_current(socket: &Arc<Socket>, enlisted_in: &mut u64) {
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
pub struct EnteredScope {
    scope: Arc<AbortScope>,
    previous: Option<Arc<AbortScope>>,
}

impl EnteredScope {
    /// The scope, for a cancellation callback.
    pub fn scope(&self) -> Arc<AbortScope> {
        self.scope.clone()
    }
}

impl Drop for EnteredScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        // Kept for this thread's next request (invariant 6); `try_with`: a thread being torn
        // down simply drops it.
        let _ = SPARE.try_with(|spare| spare.set(Some(self.scope.clone())));
    }
}

/// Shuts one shutdown handle down, if it is still alive.
pub type Shutter = Box<dyn Fn() + Send + Sync>;

/// One connection's shutdown handles (usually one: the TCP socket under any TLS).
#[derive(Default)]
pub struct Socket {
    state: Mutex<SocketState>,
}

#[derive(Default)]
struct SocketState {
    /// Set once, never cleared (invariant 4).
    shut: bool,
    /// Id of the scope that owns the socket (invariant 2); 0 before any.
    owner: u64,
    /// Each shuts one handle down if it is still alive (invariant 5).
    handles: Vec<Shutter>,
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
        for shut in &handles {
            shut();
        }
    }

    /// Adds a handle: `shut` shuts it down if it is still alive (invariant 5). Shut at once if
    /// the socket already is (invariant 3).
    pub fn add_handle(&self, shut: Shutter) {
        let mut state = self.state.lock();
        if state.shut {
            drop(state);
            shut();
        } else {
            state.handles.push(shut);
        }
    }

    /// Whether an abort shut the socket (invariant 4).
    pub fn is_shut(&self) -> bool {
        self.state.lock().shut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::AtomicUsize;

    /// A shutdown handle that counts its shutdowns.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    /// A handle and its [`Shutter`], which holds it weakly (invariant 5).
    fn handle() -> (std::sync::Arc<Counting>, Shutter) {
        let strong = std::sync::Arc::new(Counting::default());
        let weak = std::sync::Arc::downgrade(&strong);
        let shut: Shutter = Box::new(move || {
            if let Some(handle) = weak.upgrade() {
                // SeqCst: test code, read back by `shutdowns` on the same thread.
                handle.0.fetch_add(1, Ordering::SeqCst);
            }
        });
        (strong, shut)
    }

    /// A socket with one counted handle.
    fn socket() -> (std::sync::Arc<Counting>, Arc<Socket>) {
        let (h, w) = handle();
        let socket = Arc::new(Socket::default());
        socket.add_handle(w);
        (h, socket)
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
        let (h, socket) = socket();
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
        // Invariant 6: the thread's next request reuses the scope, under a new id, with no
        // socket and not aborted; a late abort of the old request shuts nothing of the new one.
        let (h, socket) = socket();
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
    fn a_reused_scope_enlists_the_same_socket_again() {
        // Invariant 6: the reused scope's new id makes a socket the last request used (a pooled
        // connection checked out again) join it, so this request's abort shuts it. (Fails if
        // `renew` keeps the old id: the socket looks enlisted already.)
        let (h, socket) = socket();
        let mut e = 0;
        let first = AbortScope::enter();
        enlist_current(&socket, &mut e);
        drop(first);
        let second = AbortScope::enter();
        enlist_current(&socket, &mut e);
        assert_eq!(e, second.scope.id);
        second.scope().abort();
        assert_eq!(shutdowns(&h), 1);
    }

    #[test]
    fn a_dropped_handle_is_not_kept_alive() {
        // Invariant 5: the socket holds its handles weakly.
        let (h, w) = handle();
        let socket = Socket::default();
        socket.add_handle(w);
        let weak = std::sync::Arc::downgrade(&h);
        drop(h);
        assert!(weak.upgrade().is_none());
        let entered = AbortScope::enter();
        let (socket, mut e) = (Arc::new(socket), 0);
        enlist_current(&socket, &mut e);
        entered.scope().abort(); // nothing left to shut: no panic
        assert!(socket.is_shut());
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
