//! `KeyedLimiter<K>`: one GCRA state per key, sharded, with bounded memory.
//!
//! Invariants:
//!
//! 1. A key's state is an `AtomicU64` TAT (no generation bits: a key's quota is fixed when the
//!    key is inserted; a key with the default quota stores no quota at all, so a `u64` key and
//!    its state are 24 bytes) inside its shard's map. Decisions on an existing key hold the shard's
//!    *read* lock and CAS the TAT, so readers of existing keys never wait for each other; only
//!    inserting or removing a key takes the shard's write lock.
//! 2. An absent key is a full one (GCRA: `tat ≤ now` carries no information). So removing a key
//!    whose TAT is `≤ now` (idle) changes no later decision — the sweep removes only those, under
//!    the shard's write lock, which excludes every CAS on that shard's TATs.
//! 3. `len` counts resident keys and never exceeds `max_keys`: an insert first reserves a place
//!    with `fetch_add` and gives it back if the cap was reached. At the cap, inserts sweep idle
//!    keys (their own shard first, then every shard); if no key is idle, the new key is refused
//!    with [`LimitError::TooManyKeys`] — a busy key is never evicted, because forgetting its
//!    debt would over-admit it.
//! 4. A key's quota is `quota_for(key)` (or the default) at insert time; since an evicted key
//!    was idle, re-inserting it with the same quota gives exactly the decisions it would have had.
//! 5. A blocking wait reserves its slot on the key's TAT (under the read lock), releases the lock
//!    and parks through the clock; nothing is held while parked. Its key cannot be swept while
//!    the slot is ahead (the TAT is past `now`: busy), so a cancelled wait finds the same entry to
//!    refund — unless `retain` removed it, which forgets the key's debt anyway.

use std::fmt;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, Wake, duration_to_nanos};
use crate::error::Cause;
use crate::gcra::{self, Rate, Slot};
use crate::quota::{Quota, QuotaError};
use crate::sync::{AtomicU64, AtomicUsize, CachePadded, HashState, Ordering, RwLock};

use super::direct::not_until;
use super::{LimitError, LimitState};

/// The keyed limiter's default hasher: foldhash (hashbrown's default), seeded at random per
/// limiter. Several times cheaper than std's SipHash on short keys, and its random seed keeps
/// keys from being chosen to collide by anyone who cannot observe the process's hashes. For
/// SipHash's stronger guarantee, pass `std::hash::RandomState` to
/// [`KeyedLimiter::with_hasher`].
pub type DefaultKeyHasher = HashState;

const SHARDS: usize = 16;

type QuotaFor<K> = Box<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// One shard: the keys whose hash picks it, each with its state. A `HashTable` takes the hash
/// from us, so a key is hashed once for both the shard choice and the lookup.
type Shard<K> = RwLock<HashTable<(K, Entry)>>;

/// One key's state.
#[derive(Debug)]
struct Entry {
    /// TAT in ns on the limiter's clock; `≤ now` means idle (full).
    tat: AtomicU64,
    /// The key's own quota, fixed at insert (invariant 4); `None` for the limiter's default, which
    /// keeps the common entry at 16 bytes.
    own_rate: Option<Box<Rate>>,
}

impl Entry {
    /// A full state (an absent key's) with `rate`, stored only if it is not `default`.
    fn full(rate: Rate, default: &Rate) -> Entry {
        Entry {
            tat: AtomicU64::new(0),
            own_rate: (rate != *default).then(|| Box::new(rate)),
        }
    }

    #[inline]
    fn rate<'a>(&'a self, default: &'a Rate) -> &'a Rate {
        self.own_rate.as_deref().unwrap_or(default)
    }
}

/// A rate limiter with one GCRA state per key (per client, per host…), bounded to `max_keys`
/// resident keys.
///
/// * Checks on existing keys take only a shard's read lock plus a CAS on the key's TAT.
/// * Blocking waits per key ([`wait_n`](Self::wait_n)), FIFO among one key's waiters and
///   cancellable, as [`RateLimiter::wait_n`](crate::RateLimiter::wait_n); 429 feedback per key
///   ([`penalize`](Self::penalize)).
/// * Per-key quotas: [`with_quota_for`](Self::with_quota_for) (e.g. a map of premium clients).
/// * Bounded memory: idle keys (whose state equals "absent") are swept as inserts reach
///   `max_keys`; when every resident key is busy, new keys get [`LimitError::TooManyKeys`]
///   (busy keys are never evicted, which would over-admit them).
/// * Keys are hashed once per call with [`DefaultKeyHasher`] (foldhash, randomly seeded) or the
///   hasher given to [`with_hasher`](Self::with_hasher).
///
/// # Memory ordering
///
/// Decisions promise no happens-before edges between admitted requests. A key's TAT is only
/// CASed under its shard's read lock and only removed under the write lock, so a sweep never
/// races a decision on the key it removes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{KeyedLimiter, LimitError, ManualClock, Quota};
///
/// let clock = ManualClock::new();
/// let limiter = KeyedLimiter::with_clock(Quota::per_second(2)?, 10_000, clock.clone())?
///     .with_quota_for(|client: &&str| (*client == "premium").then(|| Quota::per_second(100).unwrap()));
/// assert!(limiter.check(&"alice").is_ok());
/// assert!(limiter.check(&"alice").is_ok());
/// assert!(matches!(limiter.check(&"alice"), Err(LimitError::NotUntil { .. })));
/// assert!(limiter.check(&"bob").is_ok()); // a different key
/// assert!(limiter.check_n(&"premium", 50).is_ok());
/// assert_eq!(limiter.len(), 3);
/// # Ok::<(), tollgate::QuotaError>(())
/// ```
pub struct KeyedLimiter<K, C: Clock = MonotonicClock, S = DefaultKeyHasher> {
    shards: Box<[CachePadded<Shard<K>>]>,
    hasher: S,
    rate: Rate,
    quota_for: Option<QuotaFor<K>>,
    max_keys: usize,
    /// Resident keys (invariant 3).
    len: CachePadded<AtomicUsize>,
    /// Idle keys removed by sweeps so far (for monitoring; `retain` removals are not counted).
    evicted: AtomicU64,
    clock: C,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K, MonotonicClock> {
    /// A keyed limiter giving every key `quota`, holding at most `max_keys` keys
    /// (`max_keys = 0` is [`QuotaError::ZeroMaxKeys`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, Quota};
    /// let per_ip = KeyedLimiter::new(Quota::per_minute(60)?, 100_000)?;
    /// assert!(per_ip.check(&[127, 0, 0, 1]).is_ok());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn new(quota: Quota, max_keys: usize) -> Result<Self, QuotaError> {
        Self::with_clock(quota, max_keys, MonotonicClock)
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    /// As [`new`](KeyedLimiter::new), measuring time on `clock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, ManualClock, Quota};
    /// let limiter = KeyedLimiter::<u64, _>::with_clock(Quota::per_second(1)?, 10, ManualClock::new())?;
    /// assert!(limiter.check(&7).is_ok());
    /// assert!(limiter.check(&7).is_err());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn with_clock(quota: Quota, max_keys: usize, clock: C) -> Result<Self, QuotaError> {
        if max_keys == 0 {
            return Err(QuotaError::ZeroMaxKeys);
        }
        Ok(KeyedLimiter {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
                .collect(),
            hasher: HashState::default(),
            rate: quota.rate(),
            quota_for: None,
            max_keys,
            len: CachePadded::new(AtomicUsize::new(0)),
            evicted: AtomicU64::new(0),
            clock,
        })
    }
}

impl<K: Hash + Eq + Clone, C: Clock, S: BuildHasher> KeyedLimiter<K, C, S> {
    /// Hashes keys with `hasher` instead of [`DefaultKeyHasher`] — e.g. std's SipHash
    /// (`std::hash::RandomState`) where keys come from clients who might study the process's
    /// timing to find colliding keys. Keys already resident are kept (rehashed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::RandomState;
    /// use tollgate::{KeyedLimiter, Quota};
    ///
    /// let per_token = KeyedLimiter::new(Quota::per_second(5)?, 10_000)?.with_hasher(RandomState::new());
    /// assert!(per_token.check(&"api-token-1").is_ok());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn with_hasher<H: BuildHasher>(self, hasher: H) -> KeyedLimiter<K, C, H> {
        let shards: Box<[CachePadded<Shard<K>>]> = (0..SHARDS)
            .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
            .collect();
        for shard in self.shards.iter() {
            for (key, entry) in shard.write().drain() {
                let hash = hasher.hash_one(&key);
                shards[shard_index(hash)]
                    .write()
                    .insert_unique(hash, (key, entry), |(k, _)| hasher.hash_one(k));
            }
        }
        KeyedLimiter {
            shards,
            hasher,
            rate: self.rate,
            quota_for: self.quota_for,
            max_keys: self.max_keys,
            len: self.len,
            evicted: self.evicted,
            clock: self.clock,
        }
    }

    /// Gives keys for which `f` returns `Some(quota)` that quota instead of the default. `f` runs
    /// when a key is inserted (first seen, or seen again after it went idle and was swept).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tollgate::{KeyedLimiter, Quota};
    ///
    /// let premium: HashMap<String, Quota> = [("acme".to_string(), Quota::per_second(100)?)].into();
    /// let limiter = KeyedLimiter::new(Quota::per_second(1)?, 1_000)?
    ///     .with_quota_for(move |key: &String| premium.get(key).copied());
    /// assert!(limiter.check_n(&"acme".to_string(), 100).is_ok());
    /// assert!(limiter.check_n(&"other".to_string(), 2).is_err());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn with_quota_for(
        mut self,
        f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static,
    ) -> Self {
        self.quota_for = Some(Box::new(f));
        self
    }

    /// The key's hash and its shard.
    #[inline]
    fn shard(&self, key: &K) -> (u64, &Shard<K>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[shard_index(hash)])
    }

    fn rate_for(&self, key: &K) -> Rate {
        match &self.quota_for {
            Some(f) => f(key).map_or(self.rate, |quota| quota.rate()),
            None => self.rate,
        }
    }

    /// Takes one token for `key`, or says when. See [`check_n`](Self::check_n).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::KeyedLimiter::new(tollgate::Quota::per_hour(1)?, 10)?;
    /// assert!(limiter.check(&"k").is_ok());
    /// assert!(limiter.check(&"k").is_err());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), LimitError> {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens for `key` now (all or nothing), or says when. Errors:
    /// [`LimitError::NotUntil`], [`LimitError::InsufficientCapacity`] (`n` over the key's burst),
    /// [`LimitError::TooManyKeys`] (a new key while `max_keys` busy keys are resident).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, LimitError, ManualClock, Quota};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(5)?, 1, ManualClock::new())?;
    /// limiter.check_n(&1, 5)?;
    /// // Key 1 is busy and the limiter holds one key: a new key is refused, not key 1 evicted.
    /// assert_eq!(limiter.check(&2), Err(LimitError::TooManyKeys { max_keys: 1 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn check_n(&self, key: &K, n: u64) -> Result<(), LimitError> {
        let now = self.clock.now();
        self.on_entry(key, n, now, |entry, rate| take(entry, rate, now, n))
    }

    /// Blocks until one token for `key` is granted or `token` is cancelled. See
    /// [`wait_n`](Self::wait_n).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, KeyedLimiter, Quota};
    /// let per_host = KeyedLimiter::new(Quota::per_second(1_000)?, 100)?;
    /// let token = CancelToken::new();
    /// for _ in 0..1_005 {
    ///     per_host.wait(&"api.example.com", &token)?; // 1000 at once, then one per ms
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn wait(&self, key: &K, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_n(key, 1, token)
    }

    /// Blocks until `n` tokens for `key` are granted, or `token` is cancelled: the keyed form
    /// of [`RateLimiter::wait_n`](crate::RateLimiter::wait_n).
    ///
    /// The wait reserves a slot on the key's state first (so one key's waiters are served in
    /// arrival order, each woken once at its instant), then parks through the clock with no
    /// lock held (invariant 5).
    ///
    /// * `n > burst` of the key's quota: [`LimitError::InsufficientCapacity`] at once.
    /// * A new key while `max_keys` busy keys are resident: [`LimitError::TooManyKeys`] at once.
    /// * The slot is after `token`'s deadline: [`LimitError::WouldExceedDeadline`] at once,
    ///   taking nothing.
    /// * `token` cancelled: the part of the slot not yet due is given back (later waiters keep
    ///   their slots) and the result is [`LimitError::Cancelled`]. Cancelled (or its deadline
    ///   reached) at the instant the slot comes due: the slot wins, the wait succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, KeyedLimiter, LimitError, ManualClock, Quota};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(2)?, 100, clock.clone())?;
    /// limiter.check_n(&"a", 2)?;
    /// // The next token for "a" is 500 ms away; a token with 100 ms left fails at once.
    /// let hurried = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_millis(100));
    /// assert!(matches!(limiter.wait(&"a", &hurried), Err(LimitError::WouldExceedDeadline { .. })));
    /// // Another key does not wait at all.
    /// limiter.wait(&"b", &CancelToken::new())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_n(&self, key: &K, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        if token.is_cancelled() {
            return Err(LimitError::Cancelled(
                token.cause().unwrap_or(Cause::Cancelled),
            ));
        }
        let now = self.clock.now();
        let latest = token.deadline_in_clock(now);
        let Some(slot) = self.on_entry(key, n, now, |entry, rate| {
            reserve(entry, rate, now, n, latest)
        })?
        else {
            return Ok(()); // n = 0
        };
        if slot.at <= now {
            return Ok(());
        }
        match self.clock.park_until(slot.at, token) {
            Wake::Reached => Ok(()),
            // Cancelled as the slot came due: the tokens are the caller's already (as in
            // `Reservation::wait`).
            Wake::Cancelled if self.clock.now() >= slot.at => Ok(()),
            Wake::Cancelled => {
                self.refund(key, &slot);
                Err(LimitError::Cancelled(
                    token.cause().unwrap_or(Cause::Cancelled),
                ))
            }
        }
    }

    /// Lets nothing pass for `key` for `pause` from now, then resumes from an empty burst (a
    /// 429's `Retry-After` for one host or client). Never loosens a key that owes more. A new key
    /// is inserted to hold the pause (at the key cap with every key busy, the pause is dropped:
    /// the key was not tracked, and tracking it would need to evict a busy one).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{KeyedLimiter, ManualClock, Quota};
    ///
    /// let clock = ManualClock::new();
    /// let per_host = KeyedLimiter::with_clock(Quota::per_second(10)?, 100, clock.clone())?;
    /// per_host.penalize(&"slow.example", Duration::from_secs(2));
    /// assert!(per_host.check(&"slow.example").is_err());
    /// assert!(per_host.check(&"fast.example").is_ok());
    /// clock.advance(Duration::from_secs(2));
    /// assert!(per_host.check(&"slow.example").is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn penalize(&self, key: &K, pause: Duration) {
        let now = self.clock.now();
        let pause = duration_to_nanos(pause);
        // n = 1 only to pass `on_entry`'s request checks; nothing is taken.
        let _ = self.on_entry(key, 1, now, |entry, rate| {
            update_tat(&entry.tat, |tat| match gcra::pause(tat, now, rate, pause) {
                next if next == tat => Step::Stop(Ok(())),
                next => Step::Store(next, Ok(())),
            })
        });
    }

    /// Runs `decide` on `key`'s entry under its shard's read lock, inserting the key first if
    /// it is absent. Requests that can never touch state (`n = 0`, `n > burst`) are decided on
    /// a full entry that is not inserted.
    #[inline]
    fn on_entry<T>(
        &self,
        key: &K,
        n: u64,
        now: u64,
        decide: impl Fn(&Entry, &Rate) -> Result<T, LimitError>,
    ) -> Result<T, LimitError> {
        let (hash, shard) = self.shard(key);
        {
            let map = shard.read();
            if let Some((_, entry)) = map.find(hash, |(k, _)| k == key) {
                return decide(entry, entry.rate(&self.rate));
            }
        }
        self.insert_slow(shard, hash, key, n, now, decide)
    }

    #[cold]
    fn insert_slow<T>(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &K,
        n: u64,
        now: u64,
        decide: impl Fn(&Entry, &Rate) -> Result<T, LimitError>,
    ) -> Result<T, LimitError> {
        let rate = self.rate_for(key);
        if n > rate.burst || n == 0 {
            return decide(&Entry::full(rate, &rate), &rate);
        }
        let mut swept_all = false;
        loop {
            let mut map = shard.write();
            if let Some((_, entry)) = map.find(hash, |(k, _)| k == key) {
                return decide(entry, entry.rate(&self.rate));
            }
            // Relaxed: `len` is only a counter for the cap; each shard's map is guarded by its
            // lock, and fetch_add makes concurrent reservations of the last place exclusive.
            if self.len.fetch_add(1, Ordering::Relaxed) < self.max_keys {
                // An absent key is full (invariant 2): insert it full, then decide on it under
                // the write lock, which excludes every other decision on this shard.
                let (_, entry) = map
                    .insert_unique(
                        hash,
                        (key.clone(), Entry::full(rate, &self.rate)),
                        |(k, _)| self.hasher.hash_one(k),
                    )
                    .into_mut();
                return decide(entry, &rate);
            }
            // Relaxed: gives back the place just reserved (see above).
            self.len.fetch_sub(1, Ordering::Relaxed);
            if self.sweep_map(&mut map, now) > 0 {
                continue;
            }
            drop(map);
            if swept_all {
                return Err(LimitError::TooManyKeys {
                    max_keys: self.max_keys,
                });
            }
            self.sweep_at(now);
            swept_all = true;
        }
    }

    /// Gives back what a cancelled wait's slot can (see `gcra::refund`), if its key is resident.
    fn refund(&self, key: &K, slot: &Slot) {
        let now = self.clock.now();
        let (hash, shard) = self.shard(key);
        let map = shard.read();
        let Some((_, entry)) = map.find(hash, |(k, _)| k == key) else {
            return; // removed by `retain`, debt and all (invariant 5)
        };
        update_tat(&entry.tat, |tat| match gcra::refund(tat, now, slot) {
            Some(next) => Step::Store(next, ()),
            None => Step::Stop(()),
        });
    }

    /// Removes the idle keys of one locked shard; returns how many.
    fn sweep_map(&self, map: &mut HashTable<(K, Entry)>, now: u64) -> usize {
        let before = map.len();
        // Relaxed: the write lock excludes every CAS on these TATs (they run under the read lock).
        map.retain(|(_, entry)| entry.tat.load(Ordering::Relaxed) > now);
        let removed = before - map.len();
        // Relaxed: counters only (invariant 3).
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    fn sweep_at(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| self.sweep_map(&mut shard.write(), now))
            .sum()
    }

    /// Removes every idle key now (they carry no state: their next decision is unchanged);
    /// returns how many. Inserts at the cap do this on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{KeyedLimiter, ManualClock, Quota};
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(1)?, 100, clock.clone())?;
    /// limiter.check(&"a").unwrap();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(limiter.sweep(), 1);
    /// assert!(limiter.is_empty());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.clock.now())
    }

    /// Keeps only the keys for which `keep` returns true (removed keys start full next time).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 100)?;
    /// for key in 0..10u32 {
    ///     limiter.check(&key).unwrap();
    /// }
    /// limiter.retain(|key| key % 2 == 0);
    /// assert_eq!(limiter.len(), 5);
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        for shard in self.shards.iter() {
            let mut map = shard.write();
            let before = map.len();
            map.retain(|(key, _)| keep(key));
            // Relaxed: counter only (invariant 3).
            self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
        }
    }

    /// Resident keys (never more than `max_keys`).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 100)?;
    /// limiter.check(&"x").unwrap();
    /// assert_eq!(limiter.len(), 1);
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot of a counter.
        self.len.load(Ordering::Relaxed).min(self.max_keys)
    }

    /// How many idle keys sweeps have removed so far (automatic sweeps at the cap and
    /// [`sweep`](Self::sweep); not [`retain`](Self::retain)): for a `/metrics` evictions count.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{KeyedLimiter, ManualClock, Quota};
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(1)?, 2, clock.clone())?;
    /// limiter.check(&1).unwrap();
    /// limiter.check(&2).unwrap();
    /// clock.advance(Duration::from_secs(1));
    /// limiter.check(&3).unwrap(); // at the cap: idle keys are swept to make room
    /// limiter.sweep(); // and any idle key left goes now
    /// assert_eq!(limiter.evictions(), 2);
    /// assert_eq!(limiter.len(), 1);
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn evictions(&self) -> u64 {
        // Relaxed: a snapshot of a counter.
        self.evicted.load(Ordering::Relaxed)
    }

    /// Whether no key is resident.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::KeyedLimiter::<u8>::new(tollgate::Quota::per_second(1)?, 100)?;
    /// assert!(limiter.is_empty());
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Peeks at `key` without taking anything (an absent key is full).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::KeyedLimiter::new(tollgate::Quota::per_second(3)?, 100)?;
    /// limiter.check(&"k").unwrap();
    /// assert_eq!(limiter.state(&"k").remaining, 2);
    /// assert_eq!(limiter.state(&"new").remaining, 3);
    /// # Ok::<(), tollgate::QuotaError>(())
    /// ```
    pub fn state(&self, key: &K) -> LimitState {
        let now = self.clock.now();
        let (hash, shard) = self.shard(key);
        let map = shard.read();
        let (tat, rate) = match map.find(hash, |(k, _)| k == key) {
            // Relaxed: a peek; the value is a snapshot of the TAT.
            Some((_, entry)) => (entry.tat.load(Ordering::Relaxed), *entry.rate(&self.rate)),
            None => (0, self.rate_for(key)),
        };
        let snapshot = gcra::snapshot(tat, now, &rate);
        LimitState {
            remaining: snapshot.remaining,
            burst: rate.burst,
            retry_after: Duration::from_nanos(snapshot.retry_after),
            reset_after: Duration::from_nanos(snapshot.reset_after),
        }
    }
}

/// The shard of a key's hash: bits 40..44, since the table uses the low bits for buckets and
/// the top 7 for its control bytes.
#[inline]
fn shard_index(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

/// What one round of a TAT update decided.
enum Step<T> {
    /// Store this TAT, then return `T` (decided again if the TAT moved meanwhile).
    Store(u64, T),
    /// Return `T`, storing nothing.
    Stop(T),
}

/// The CAS loop every change of a key's TAT goes through (under its shard's lock): `step` sees
/// the current TAT and decides; a store that loses a race decides again on the TAT that won.
#[inline]
fn update_tat<T>(tat: &AtomicU64, mut step: impl FnMut(u64) -> Step<T>) -> T {
    // Relaxed (load and CAS): the TAT guards no other data, and admitting a request creates no
    // happens-before edge (as in the direct limiter); the CAS validates the value decided on.
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        match step(current) {
            Step::Stop(out) => return out,
            Step::Store(next, out) => {
                match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => return out,
                    Err(actual) => current = actual,
                }
            }
        }
    }
}

/// Takes `n` tokens now from one key.
#[inline]
fn take(entry: &Entry, rate: &Rate, now: u64, n: u64) -> Result<(), LimitError> {
    if n > rate.burst || n == 0 {
        return trivial::<()>(n, rate).map(|_| ());
    }
    update_tat(&entry.tat, |tat| match gcra::check(tat, now, rate, n) {
        Ok(next) => Step::Store(next, Ok(())),
        Err(wait) => Step::Stop(Err(not_until(now, wait))),
    })
}

/// Reserves `n` tokens on one key if their slot is due no later than `latest`; `None` for
/// `n = 0` (nothing to reserve).
fn reserve(
    entry: &Entry,
    rate: &Rate,
    now: u64,
    n: u64,
    latest: u64,
) -> Result<Option<Slot>, LimitError> {
    if n > rate.burst || n == 0 {
        return trivial(n, rate);
    }
    update_tat(&entry.tat, |tat| match gcra::reserve(tat, now, rate, n) {
        None => Step::Stop(Err(not_until(now, u64::MAX))),
        Some(slot) if slot.at > latest => Step::Stop(Err(LimitError::WouldExceedDeadline {
            wait: Duration::from_nanos(slot.at - now),
        })),
        Some(slot) => Step::Store(slot.tat, Ok(Some(slot))),
    })
}

/// `n = 0` (passes, nothing to take) or `n > burst` (never passes).
#[cold]
fn trivial<T>(n: u64, rate: &Rate) -> Result<Option<T>, LimitError> {
    if n == 0 {
        Ok(None)
    } else {
        Err(LimitError::InsufficientCapacity {
            requested: n,
            burst: rate.burst,
        })
    }
}

impl<K, C: Clock, S> fmt::Debug for KeyedLimiter<K, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("quota", &Quota::from_rate(&self.rate))
            // Relaxed: a snapshot for display.
            .field("keys", &self.len.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
