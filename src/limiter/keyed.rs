//! `KeyedLimiter<K>`: one GCRA state per key, sharded, with bounded memory.
//!
//! Invariants:
//!
//! 1. A key's state is an `AtomicU64` TAT (no generation bits: a key's quota is fixed when the
//!    key is inserted) inside its shard's map. Decisions on an existing key hold the shard's
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

use std::fmt;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::gcra::{self, Rate};
use crate::quota::{Quota, QuotaError};
use crate::sync::{AtomicU64, AtomicUsize, CachePadded, HashState, Ordering, RwLock};

use super::{LimitError, LimitState};

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
    /// The key's quota, fixed at insert (invariant 4).
    rate: Rate,
}

/// A rate limiter with one GCRA state per key (per client, per host…), bounded to `max_keys`
/// resident keys.
///
/// * Checks on existing keys take only a shard's read lock plus a CAS on the key's TAT.
/// * Per-key quotas: [`with_quota_for`](Self::with_quota_for) (e.g. a map of premium clients).
/// * Bounded memory: idle keys (whose state equals "absent") are swept as inserts reach
///   `max_keys`; when every resident key is busy, new keys get [`LimitError::TooManyKeys`]
///   (busy keys are never evicted, which would over-admit them).
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
pub struct KeyedLimiter<K, C: Clock = MonotonicClock> {
    shards: Box<[CachePadded<Shard<K>>]>,
    hasher: HashState,
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

    /// The key's hash and its shard. The shard comes from bits 40..44: the table uses the low
    /// bits for buckets and the top 7 for its control bytes.
    #[inline]
    fn shard(&self, key: &K) -> (u64, &Shard<K>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[(hash >> 40) as usize % SHARDS])
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
        let (hash, shard) = self.shard(key);
        {
            let map = shard.read();
            if let Some((_, entry)) = map.find(hash, |(k, _)| k == key) {
                return decide(entry, now, n);
            }
        }
        self.insert_slow(shard, hash, key, now, n)
    }

    #[cold]
    fn insert_slow(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &K,
        now: u64,
        n: u64,
    ) -> Result<(), LimitError> {
        let rate = self.rate_for(key);
        if n > rate.burst {
            return Err(LimitError::InsufficientCapacity {
                requested: n,
                burst: rate.burst,
            });
        }
        if n == 0 {
            return Ok(());
        }
        let mut swept_all = false;
        loop {
            let mut map = shard.write();
            if let Some((_, entry)) = map.find(hash, |(k, _)| k == key) {
                return decide(entry, now, n);
            }
            // An absent key is full: n ≤ burst always passes (gcra invariant 4).
            let tat = match gcra::check(0, now, &rate, n) {
                Ok(tat) => tat,
                Err(wait) => return Err(super::direct::not_until(now, wait)),
            };
            // Relaxed: `len` is only a counter for the cap; each shard's map is guarded by its
            // lock, and fetch_add makes concurrent reservations of the last place exclusive.
            if self.len.fetch_add(1, Ordering::Relaxed) < self.max_keys {
                let entry = Entry {
                    tat: AtomicU64::new(tat),
                    rate,
                };
                map.insert_unique(hash, (key.clone(), entry), |(k, _)| self.hasher.hash_one(k));
                return Ok(());
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
            Some((_, entry)) => (entry.tat.load(Ordering::Relaxed), entry.rate),
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

/// The GCRA CAS loop on one existing key (under its shard's read lock).
#[inline]
fn decide(entry: &Entry, now: u64, n: u64) -> Result<(), LimitError> {
    if n > entry.rate.burst {
        return Err(LimitError::InsufficientCapacity {
            requested: n,
            burst: entry.rate.burst,
        });
    }
    if n == 0 {
        return Ok(());
    }
    // Relaxed: the TAT guards no other data; the CAS below validates the value read.
    let mut tat = entry.tat.load(Ordering::Relaxed);
    loop {
        match gcra::check(tat, now, &entry.rate, n) {
            Err(wait) => return Err(super::direct::not_until(now, wait)),
            Ok(next) => match entry.tat.compare_exchange_weak(
                tat,
                next,
                // Relaxed both ways: only the TAT itself is published (as in the direct limiter,
                // admitting a request creates no happens-before edge).
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            },
        }
    }
}

impl<K, C: Clock> fmt::Debug for KeyedLimiter<K, C> {
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
