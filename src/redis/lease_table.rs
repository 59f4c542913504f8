//! The lease table: per key, tokens taken from Redis ahead of need and spent locally, a denial
//! remembered until Redis's `retry_after`, and a single-flight refill — when a key's lease runs
//! out, one caller asks Redis while the others for that key wait on the crate's [`WaitList`]
//! (with a deadline) for its answer.
//!
//! Pure: no Redis, no clock of its own (the caller passes `now`), so the loom models in
//! `loom-tests/tests/lease_table.rs` check this very code (it is compiled alone under loom as
//! `tollgate::lease_table`), and `tests` below models it against a sequential map with proptest.
//!
//! Invariants:
//!
//! 1. Every token spent locally was granted by a refill ([`Refill::granted`]), i.e. charged in
//!    Redis first; tokens are spent under the table's lock, so no token is spent twice.
//! 2. Single flight: at most one refill per key is in flight (`refilling`), from the
//!    [`Take::Refill`] that set it to the [`Refill`]'s drop, which clears it — also when the
//!    refill is dropped unfinished (a panic): then the waiters look again and one of them refills.
//! 3. A caller that finds its key's refill in flight registers on the key's wait list under the
//!    lock and waits; the refill's end (under the same lock) clears `refilling` and decides every
//!    waiter (`REFILLED`, or `FAILED + code` when Redis could not answer), so no waiter is left
//!    behind (the wait list's invariant 3). A waiter whose deadline passes leaves under the lock;
//!    if it was decided first it honours the decision (the wait list's invariant 2). A waiter is
//!    never both served and timed out.
//! 4. Waiters exist only while `refilling` is set (they register only then, and the refill's end
//!    decides them all), so an entry that is not refilling has no waiters and may be dropped.
//! 5. At most [`MAX_LEASE_KEYS`] entries: to add one to a full table, entries holding nothing
//!    (no tokens, no live denial, no refill) go first, then every entry not refilling (dropping
//!    leased tokens only under-admits); if every entry is refilling, the key is not tracked and
//!    the caller asks Redis on its own ([`Take::Untracked`]).
//! 6. A [`forget`](LeaseTable::forget) or [`pause`](LeaseTable::pause) during a refill makes that
//!    refill's outcome be dropped (its tokens were taken before the reset or the pause).
//! 7. A refill knows how many callers waited on the key's previous refill ([`Refill::demand`],
//!    at most [`MAX_DEMAND`]), so its caller can ask Redis for their share too in the same call
//!    instead of making them refill one after another.
// `pub` items so that loom builds can export this module; `len` and `Spent`'s count serve the
// models.
#![cfg_attr(not(loom), allow(unreachable_pub, dead_code))]

use std::collections::HashMap;

use crate::cancel::CancelToken;
use crate::sync::Mutex;
use crate::wait::{WAITING, WaitList};

/// Most keys with a lease, a cached denial or a refill at once (invariant 5).
pub const MAX_LEASE_KEYS: usize = 10_000;

/// A waiter's status: the refill is over (granted, denied or abandoned), look again.
const REFILLED: usize = 0;
/// A waiter's status: the refill failed with code `status - FAILED`.
const FAILED: usize = 1;

/// Most callers a refill's [`demand`](Refill::demand) counts (invariant 7).
pub const MAX_DEMAND: u64 = 15;

#[derive(Debug, Default)]
struct Lease {
    /// Tokens granted by Redis and not yet spent.
    tokens: u64,
    /// Instant (the caller's clock, ns) before which the key is denied without asking Redis.
    denied_until: u64,
    /// A refill is in flight (invariant 2).
    refilling: bool,
    /// The in-flight refill's outcome is to be dropped (invariant 6).
    stale: bool,
    /// Callers waiting for the refill (invariant 4: empty unless `refilling`).
    waiters: WaitList<()>,
    /// How many callers the last refill's end found waiting, at most [`MAX_DEMAND`].
    demand: u64,
}

impl Lease {
    fn idle(&self, now: u64) -> bool {
        !self.refilling && self.tokens == 0 && self.denied_until <= now
    }
}

/// What [`LeaseTable::take`] decided.
#[derive(Debug)]
pub enum Take<'a> {
    /// Spent from the lease; this many are left.
    Spent(u64),
    /// Denied until this instant.
    DeniedUntil(u64),
    /// This caller refills: it asks Redis, then reports through the [`Refill`].
    Refill(Refill<'a>),
    /// The refill this caller waited for failed with this code (the caller's own meaning).
    Failed(usize),
    /// The deadline passed while another caller's refill was in flight.
    TimedOut,
    /// The table is full of refilling keys: ask Redis without a lease (invariant 5).
    Untracked,
}

/// Leases by key, with single-flight refills (see the module docs).
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_key: Mutex<HashMap<String, Lease>>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spends `n` leased tokens of `key`, or reports its cached denial; otherwise makes this
    /// caller the key's refill, or — when a refill is in flight — waits for it (on the token
    /// `deadline()` makes, made once, only if this caller has to wait) and looks again.
    /// `now()` is read under the lock at each look.
    #[inline]
    pub fn take<'a>(
        &'a self,
        key: &str,
        n: u64,
        now: impl Fn() -> u64,
        deadline: impl FnOnce() -> CancelToken,
    ) -> Take<'a> {
        {
            let mut map = self.by_key.lock();
            if let Some(lease) = map.get_mut(key)
                && lease.tokens >= n
            {
                lease.tokens -= n;
                return Take::Spent(lease.tokens);
            }
        }
        self.take_slow(key, n, now, deadline)
    }

    #[cold]
    fn take_slow<'a>(
        &'a self,
        key: &str,
        n: u64,
        now: impl Fn() -> u64,
        deadline: impl FnOnce() -> CancelToken,
    ) -> Take<'a> {
        let mut deadline = Some(deadline);
        let mut token: Option<CancelToken> = None;
        loop {
            let waiter = {
                let mut map = self.by_key.lock();
                let now = now();
                match map.get_mut(key) {
                    Some(lease) => {
                        if lease.tokens >= n {
                            lease.tokens -= n;
                            return Take::Spent(lease.tokens);
                        }
                        if lease.denied_until > now {
                            return Take::DeniedUntil(lease.denied_until);
                        }
                        if !lease.refilling {
                            lease.refilling = true;
                            return Take::Refill(self.refill(key, lease.demand));
                        }
                        // Invariant 3: registered under the lock the refill's end takes.
                        lease.waiters.register(())
                    }
                    None => {
                        if !make_room(&mut map, now) {
                            return Take::Untracked;
                        }
                        map.insert(
                            key.to_owned(),
                            Lease {
                                refilling: true,
                                ..Lease::default()
                            },
                        );
                        return Take::Refill(self.refill(key, 0));
                    }
                }
            };
            if token.is_none()
                && let Some(make) = deadline.take()
            {
                token = Some(make());
            }
            let status = match waiter.wait(token.as_ref()) {
                Ok(status) => status,
                Err(_) => {
                    let mut map = self.by_key.lock();
                    match map.get_mut(key) {
                        Some(lease) => lease.waiters.leave(&waiter),
                        // Invariant 4: the entry went only after its refill decided us.
                        None => waiter.status(),
                    }
                }
            };
            match status {
                WAITING => return Take::TimedOut,
                REFILLED => {}
                failed => return Take::Failed(failed - FAILED),
            }
        }
    }

    fn refill(&self, key: &str, demand: u64) -> Refill<'_> {
        Refill {
            table: self,
            key: key.to_owned(),
            demand,
            outcome: None,
        }
    }

    /// Forgets `key`'s tokens and cached denial (a reset); a refill in flight is kept (its
    /// waiters are decided when it ends) but its outcome dropped (invariant 6).
    pub fn forget(&self, key: &str) {
        let mut map = self.by_key.lock();
        if let Some(lease) = map.get_mut(key) {
            if lease.refilling {
                lease.tokens = 0;
                lease.denied_until = 0;
                lease.stale = true;
            } else {
                map.remove(key);
            }
        }
    }

    /// A pause: forgets the lease and denies `key` until `until` (also past a refill in flight,
    /// invariant 6).
    pub fn pause(&self, key: &str, until: u64, now: u64) {
        let mut map = self.by_key.lock();
        if !map.contains_key(key) && !make_room(&mut map, now) {
            return;
        }
        let lease = map.entry(key.to_owned()).or_default();
        lease.tokens = 0;
        lease.denied_until = lease.denied_until.max(until);
        lease.stale |= lease.refilling;
    }

    /// Gives `n` tokens spent from `key`'s lease back to it (the request they admitted never
    /// ran): `false` when the key's lease is gone or was reset meanwhile (the tokens then stay
    /// charged: strict).
    pub fn give_back(&self, key: &str, n: u64) -> bool {
        let mut map = self.by_key.lock();
        match map.get_mut(key) {
            Some(lease) if !lease.stale && lease.denied_until == 0 => {
                lease.tokens = lease.tokens.saturating_add(n);
                true
            }
            _ => false,
        }
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.by_key.lock().len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room for one more entry (invariant 5): `false` if every entry is refilling.
fn make_room(map: &mut HashMap<String, Lease>, now: u64) -> bool {
    if map.len() < MAX_LEASE_KEYS {
        return true;
    }
    map.retain(|_, lease| !lease.idle(now));
    if map.len() >= MAX_LEASE_KEYS {
        map.retain(|_, lease| lease.refilling);
    }
    map.len() < MAX_LEASE_KEYS
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Granted(u64),
    Denied(u64),
    Failed(usize),
}

/// One key's refill in flight: the caller asks Redis and reports what it said. Dropping it
/// unreported (a panic) lets the waiters look again (invariant 2).
#[derive(Debug)]
#[must_use = "a refill's waiters wait until it is reported or dropped"]
pub struct Refill<'a> {
    table: &'a LeaseTable,
    key: String,
    /// Callers that waited on the key's previous refill (invariant 7).
    demand: u64,
    outcome: Option<Outcome>,
}

impl Refill<'_> {
    /// How many callers waited on this key's previous refill (at most [`MAX_DEMAND`]): the
    /// demand beyond this caller's own that the refill may ask Redis for (invariant 7).
    pub fn demand(&self) -> u64 {
        self.demand
    }

    /// Redis granted `extra` tokens beyond what this caller used.
    pub fn granted(mut self, extra: u64) {
        self.outcome = Some(Outcome::Granted(extra));
    }

    /// Redis denied the key until `until` (the caller's clock).
    pub fn denied(mut self, until: u64) {
        self.outcome = Some(Outcome::Denied(until));
    }

    /// Redis could not answer; the waiters get [`Take::Failed`]`(code)` at once.
    pub fn failed(mut self, code: usize) {
        self.outcome = Some(Outcome::Failed(code));
    }
}

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        let mut wakes = crate::wait::Wakes::default();
        {
            let mut map = self.table.by_key.lock();
            // Invariant 2: only this refill's owner removes `refilling`, and nobody removes a
            // refilling entry (invariants 4 and 5), so the entry is here.
            let Some(lease) = map.get_mut(&self.key) else {
                debug_assert!(false, "a refilling lease entry went away");
                return;
            };
            let stale = std::mem::take(&mut lease.stale);
            let status = match self.outcome {
                Some(Outcome::Granted(extra)) if !stale => {
                    lease.tokens = lease.tokens.saturating_add(extra);
                    lease.denied_until = 0;
                    REFILLED
                }
                Some(Outcome::Denied(until)) if !stale => {
                    lease.denied_until = until;
                    REFILLED
                }
                Some(Outcome::Failed(code)) => FAILED.saturating_add(code).min(WAITING - 1),
                _ => REFILLED,
            };
            lease.refilling = false;
            lease.demand = (lease.waiters.len() as u64).min(MAX_DEMAND);
            lease.waiters.notify_all(status, &mut wakes);
        }
        wakes.unpark();
    }
}

#[cfg(all(test, not(loom)))]
#[path = "lease_table/tests.rs"]
mod tests;
