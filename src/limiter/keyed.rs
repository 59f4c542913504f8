//! `KeyedLimiter<K>`: one GCRA state per key and window, sharded, with bounded memory.
//!
//! Invariants:
//!
//! 1. A key's entry holds one TAT per window (`AtomicU64`s, inline for up to two windows) and,
//!    only when the key has quotas of its own, their rates. Decisions on an existing key hold the
//!    shard's *read* lock and change TATs only through the `core` verbs (a CAS per change), so
//!    deciders of existing keys never wait for each other; only inserting or removing a key and
//!    `set_quotas` take the shard's write lock.
//! 2. An absent key is a full one (GCRA: `tat ≤ now` carries no information). So removing a key
//!    whose every TAT is `≤ now` (idle) changes no later decision — the sweep removes only those,
//!    under the shard's write lock, which excludes every CAS on that shard's TATs.
//! 3. `len` counts resident keys and never exceeds `max_keys`: an insert first reserves a place
//!    with `fetch_add` and gives it back if the cap was reached. At the cap, inserts sweep idle
//!    keys (their own shard first, then every shard); if no key is idle, the new key is refused
//!    with [`LimitError::TooManyKeys`] — a busy key is never evicted, because forgetting its
//!    debt would over-admit it.
//! 4. A key's quotas are `quotas_for(key)` (or the defaults) at insert time. The defaults live in
//!    each shard beside its keys, with the shard's `epoch`: `set_quotas` converts every
//!    default-quota key's TATs (`gcra::convert`, as `RateLimiter::set_quota` does) and replaces
//!    the shard's rates under the shard's write lock, then bumps the epoch. A decision holds the
//!    read lock, so it sees old rates with old TATs or new rates with converted TATs, never a mix.
//!    A slot reserved under an older epoch is not refunded (it counts as used: stricter).
//! 5. Several windows are decided all or nothing without a per-key lock: every window is probed
//!    (read only — a refusal there writes nothing), then each is charged at `now` in order
//!    (`core::reserve`); a window that refuses after a race undoes the earlier charges
//!    (`core::give_back` with no instant) and the decision starts over. An undo gives back the
//!    whole charge less what later requests stacked on it, so under such a race a refused request
//!    can leave part of a charge: the limiter errs strict, never loose (as `MultiLimiter`). One
//!    window is a single `core::take`.
//! 6. A blocking wait reserves a slot in every window (under the read lock), releases the lock
//!    and parks through `core::wait_slot`; nothing is held while parked. Cancelled before its
//!    last slot comes due, the wait used none of its windows: with one window the slot is
//!    refunded (`gcra::refund`), with several every window's charge is undone (`gcra::undo`:
//!    a window whose own slot was already due gives it back too, since the caller could not use
//!    it alone); later requests keep their slots either way. Its key cannot be swept
//!    while a slot is ahead (the TAT is past `now`: busy), so a cancelled wait finds the same
//!    entry to refund — unless `retain` removed it, which forgets the key's debt anyway.
//! 7. Through [`KeyedLimits`] (string keys), a key longer than `max_key_bytes` is stored as a
//!    fixed-size keyed digest (see [`KeyedLimiter::max_key_bytes`]), so the memory one key can take
//!    is bounded whatever a client sends.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::time::Duration;

use hashbrown::HashTable;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};
use crate::gcra::{self, Rate};
use crate::quota::{Quota, QuotaError};
use crate::sync::{AtomicU64, AtomicUsize, CachePadded, HashState, Mutex, Ordering, RwLock};

use super::core::{self, Cell, Held, Seen, Sight};
use super::decision::{self, Decision, FastDecision, SightsBuilder, Source};
use super::{KeyedLimits, LimitError, LimitState};

/// The keyed limiter's default hasher: foldhash (hashbrown's default), seeded at random per
/// limiter. Several times cheaper than std's SipHash on short keys, and its random seed keeps
/// keys from being chosen to collide by anyone who cannot observe the process's hashes. For
/// SipHash's stronger guarantee, pass `std::hash::RandomState` to
/// [`KeyedLimiter::with_hasher`].
pub type DefaultKeyHasher = HashState;

const SHARDS: usize = 16;

/// Windows whose probed TATs a decision keeps on the stack (more are recorded as probed).
const PROBED: usize = 8;

/// Default [`KeyedLimiter::max_key_bytes`].
const DEFAULT_MAX_KEY_BYTES: usize = 256;

/// The per-key quota function. Declared unwind-safe: tollgate only ever calls it (by shared
/// reference); if it panics, the key is not inserted and the shard stays valid (`sync.rs`,
/// `unwind_safe`, point 1), so a limiter shared across `catch_unwind` stays usable.
struct QuotasFor<K>(Box<QuotasFn<K>>);

type QuotasFn<K> = dyn Fn(&K) -> Option<Vec<Quota>> + Send + Sync;

impl<K> std::panic::UnwindSafe for QuotasFor<K> {}
impl<K> std::panic::RefUnwindSafe for QuotasFor<K> {}

/// One shard: the keys whose hash picks it, each with its state, and the default rates they are
/// measured in (invariant 4). A `HashTable` takes the hash from us, so a key is hashed once for
/// both the shard choice and the lookup.
struct ShardData<K, const W: usize> {
    table: HashTable<(K, Entry<W>)>,
    rates: Box<[Rate]>,
    /// `rates[0]`, kept beside the lock: a one-window decision reads its rate from the cache
    /// lines it just locked instead of following `rates` to the heap (see `lone_default`).
    first: Rate,
    epoch: u64,
}

type Shard<K, const W: usize> = RwLock<ShardData<K, W>>;

impl<K, const W: usize> ShardData<K, W> {
    /// A full entry (an absent key's) of this shard's width.
    fn full(&self, windows: usize, own: Option<Box<[Rate]>>) -> Entry<W> {
        Entry::full(windows, own)
    }

    /// The default rates, read from `first` when there is one window (width one: [`Shards`]).
    #[inline]
    fn defaults(&self) -> &[Rate] {
        if W == 1 {
            std::slice::from_ref(&self.first)
        } else {
            &self.rates
        }
    }

    /// `entry`'s windows, as a decision under this shard's lock uses them.
    #[inline]
    fn view<'a>(&'a self, entry: &'a Entry<W>) -> View<'a> {
        entry.view(self.defaults(), self.epoch)
    }

    /// `entry`'s TAT if the shard holds one window, the entry has the default rate (`first`)
    /// and `1 ≤ n ≤ burst`: the keyed `check_n`'s and `decide`'s fast path, deciding with
    /// `take_one` on `first` without building a [`View`]. Keyed check over 10k keys, one thread: 0.85–0.86× governor before,
    /// 0.79–0.80× with it (0.82× through `view` and `check_view` with the rate in `first`);
    /// docs/benchmarks.md, session 7.
    #[inline(always)]
    fn lone_default<'a>(&self, entry: &'a Entry<W>, n: u64) -> Option<&'a AtomicU64> {
        (W == 1 && entry.ext.is_none() && n != 0 && n <= self.first.burst).then(|| &entry.tats[0])
    }

    /// Replaces the default rates (under the write lock: invariant 4).
    fn set_rates(&mut self, rates: &[Rate]) {
        self.rates = rates.into();
        self.first = rates[0];
        self.epoch += 1;
    }
}

/// The shards, by how many TATs an entry keeps inline: one for a one-window limiter (a `u64`
/// key and its state in 24 bytes), two otherwise (32 bytes; a limiter with more windows keeps
/// them in the entry's `Ext`). 32-byte entries for one window measured 1.27× governor's keyed
/// check with two threads against 0.87× for 24-byte ones (docs/benchmarks.md, issue 11).
enum Shards<K> {
    One(Box<[CachePadded<Shard<K, 1>>]>),
    Two(Box<[CachePadded<Shard<K, 2>>]>),
}

/// Runs `$body` with `$s` bound to the shards, whichever their width (the body is compiled
/// once per width).
macro_rules! each_width {
    ($shards:expr, $s:ident => $body:expr) => {
        match $shards {
            Shards::One($s) => $body,
            Shards::Two($s) => $body,
        }
    };
}

impl<K> From<Box<[CachePadded<Shard<K, 1>>]>> for Shards<K> {
    fn from(shards: Box<[CachePadded<Shard<K, 1>>]>) -> Self {
        Shards::One(shards)
    }
}

impl<K> From<Box<[CachePadded<Shard<K, 2>>]>> for Shards<K> {
    fn from(shards: Box<[CachePadded<Shard<K, 2>>]>) -> Self {
        Shards::Two(shards)
    }
}

impl<K> Shards<K> {
    /// Empty shards for `rates` (one window: width one).
    fn new(rates: &[Rate]) -> Self {
        if rates.len() == 1 {
            Shards::One(new_shards(rates))
        } else {
            Shards::Two(new_shards(rates))
        }
    }

    /// The default rates (every shard holds the same).
    fn rates(&self) -> Box<[Rate]> {
        each_width!(self, shards => shards[0].read().rates.clone())
    }
}

/// One key's state: one TAT per window (ns on the limiter's clock; `≤ now` means idle), inline
/// for up to `W` windows (see [`Shards`]).
#[derive(Debug)]
struct Entry<const W: usize> {
    tats: [AtomicU64; W],
    /// What only some keys need: the TATs of a limiter with more than two windows, and the
    /// key's own rates (fixed at insert, invariant 4).
    ext: Option<Box<Ext>>,
}

#[derive(Debug)]
struct Ext {
    /// Every TAT of a limiter with more windows than its entries keep inline (empty otherwise).
    tats: Box<[AtomicU64]>,
    /// The key's own rates; `None` for the shard's defaults.
    own: Option<Box<[Rate]>>,
}

impl<const W: usize> Entry<W> {
    /// A full state (an absent key's) for `windows` windows.
    fn full(windows: usize, own: Option<Box<[Rate]>>) -> Entry<W> {
        let ext = (windows > W || own.is_some()).then(|| {
            let tats = if windows > W {
                (0..windows).map(|_| AtomicU64::new(0)).collect()
            } else {
                Box::default()
            };
            Box::new(Ext { tats, own })
        });
        Entry {
            tats: std::array::from_fn(|_| AtomicU64::new(0)),
            ext,
        }
    }

    /// The key's windows: its own rates or the shard's defaults.
    #[inline]
    fn view<'a>(&'a self, shard_rates: &'a [Rate], epoch: u64) -> View<'a> {
        match &self.ext {
            None => View {
                tats: &self.tats[..shard_rates.len()],
                rates: shard_rates,
                epoch,
            },
            Some(ext) => {
                let rates: &[Rate] = ext.own.as_deref().unwrap_or(shard_rates);
                let tats = if ext.tats.is_empty() {
                    &self.tats[..rates.len()]
                } else {
                    &ext.tats[..]
                };
                View { tats, rates, epoch }
            }
        }
    }

    /// Whether the key has rates of its own.
    fn has_own(&self) -> bool {
        self.ext.as_ref().is_some_and(|ext| ext.own.is_some())
    }

    /// Whether every window is idle at `now` (invariant 2).
    fn idle(&self, now: u64) -> bool {
        let more: &[AtomicU64] = self.ext.as_ref().map_or(&[], |ext| &ext.tats);
        // Relaxed: called under the write lock, which excludes every CAS on these TATs.
        self.tats
            .iter()
            .chain(more)
            .all(|tat| tat.load(Ordering::Relaxed) <= now)
    }
}

/// A key's windows as one decision uses them.
struct View<'a> {
    tats: &'a [AtomicU64],
    rates: &'a [Rate],
    epoch: u64,
}

impl<'a> View<'a> {
    #[inline]
    fn cell(&self, i: usize) -> KeyCell<'a> {
        KeyCell {
            tat: &self.tats[i],
            rate: &self.rates[i],
            epoch: self.epoch,
        }
    }

    #[inline]
    fn burst(&self) -> u64 {
        self.rates.iter().map(|r| r.burst).min().unwrap_or(0)
    }
}

/// One window of one key, as a `core::Cell`.
struct KeyCell<'a> {
    tat: &'a AtomicU64,
    rate: &'a Rate,
    epoch: u64,
}

impl Cell for KeyCell<'_> {
    #[inline]
    fn read(&self) -> Seen {
        // Relaxed: the TAT guards no other data, and admitting a request creates no
        // happens-before edge (as in the direct limiter); the rate cannot change while the
        // caller holds the shard's read lock (invariant 4), and the CAS in `replace` validates
        // the value decided on.
        let tat = self.tat.load(Ordering::Relaxed);
        Seen {
            raw: tat,
            tat,
            rate: *self.rate,
            epoch: self.epoch,
            checked: true,
        }
    }

    #[inline]
    fn replace(&self, seen: &Seen, tat: u64) -> Result<(), Seen> {
        // Relaxed (both): as in `read`; a failure hands back the TAT that won.
        match self
            .tat
            .compare_exchange_weak(seen.raw, tat, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(current) => Err(Seen {
                raw: current,
                tat: current,
                ..*seen
            }),
        }
    }
}

/// A rate limiter with one GCRA state per key (per client, per host…) and one or several windows
/// per key (per second AND per minute AND per day, all or nothing), bounded to `max_keys`
/// resident keys.
///
/// * Decisions on existing keys take only a shard's read lock plus one CAS per window.
/// * [`decide`](Self::decide) returns a [`Decision`] carrying every window's state as that
///   decision saw it (limit, remaining, reset, retry, which window refused) for response headers;
///   [`check_n`](Self::check_n) is the same decision without it.
/// * Blocking waits per key ([`wait_n`](Self::wait_n)), FIFO among one key's waiters and
///   cancellable with refunds, as [`RateLimiter::wait_n`](crate::RateLimiter::wait_n); 429
///   feedback per key ([`penalize`](Self::penalize)).
/// * Per-key quotas: [`with_quota_for`](Self::with_quota_for) /
///   [`with_quotas_for`](Self::with_quotas_for) (e.g. a map of premium clients); live changes of
///   the default quotas that keep every key's state ([`set_quotas`](Self::set_quotas)).
/// * Lookups by any borrowed form of the key: a `KeyedLimiter<String>` is asked with a `&str`.
/// * Bounded memory: idle keys (whose state equals "absent") are swept as inserts reach
///   `max_keys`; when every resident key is busy, new keys get [`LimitError::TooManyKeys`]
///   (busy keys are never evicted, which would over-admit them). Through [`KeyedLimits`], keys
///   longer than [`max_key_bytes`](Self::max_key_bytes) are stored as a 33-byte keyed digest.
/// * Keys are hashed once per call with [`DefaultKeyHasher`] (foldhash, randomly seeded) or the
///   hasher given to [`with_hasher`](Self::with_hasher).
///
/// # Memory ordering
///
/// Decisions promise no happens-before edges between admitted requests. A key's TATs are only
/// CASed under its shard's read lock and only removed or converted under the write lock, so a
/// sweep or a quota change never races a decision on the keys it touches.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::{KeyedLimiter, LimitError}, time::ManualClock};
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
/// # Ok::<(), tollgate::limit::QuotaError>(())
/// ```
pub struct KeyedLimiter<K, C: Clock = MonotonicClock, S = DefaultKeyHasher> {
    shards: Shards<K>,
    hasher: S,
    windows: usize,
    quotas_for: Option<QuotasFor<K>>,
    max_keys: usize,
    /// Resident keys (invariant 3).
    len: CachePadded<AtomicUsize>,
    /// Idle keys removed by sweeps so far (for monitoring; `retain` removals are not counted).
    evicted: AtomicU64,
    /// Serialises `set_quotas`.
    writer: Mutex<()>,
    /// Longest string key stored verbatim through [`KeyedLimits`] (invariant 7).
    max_key_bytes: usize,
    /// The secret of the key digest: two independently seeded SipHash keys.
    digest: (RandomState, RandomState),
    clock: C,
}

fn new_shards<K, const W: usize>(rates: &[Rate]) -> Box<[CachePadded<Shard<K, W>>]> {
    (0..SHARDS)
        .map(|_| {
            CachePadded::new(RwLock::new(ShardData {
                table: HashTable::new(),
                rates: rates.into(),
                first: rates[0],
                epoch: 0,
            }))
        })
        .collect()
}

impl<K: Hash + Eq> KeyedLimiter<K, MonotonicClock> {
    /// A keyed limiter giving every key `quota`, holding at most `max_keys` keys
    /// (`max_keys = 0` is [`QuotaError::ZeroMaxKeys`]).
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroMaxKeys`] if `max_keys` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter};
    /// let per_ip = KeyedLimiter::new(Quota::per_minute(60)?, 100_000)?;
    /// assert!(per_ip.check(&[127, 0, 0, 1]).is_ok());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn new(quota: Quota, max_keys: usize) -> Result<Self, QuotaError> {
        Self::with_clock(quota, max_keys, MonotonicClock)
    }
}

impl<K: Hash + Eq, C: Clock> KeyedLimiter<K, C> {
    /// As [`new`](KeyedLimiter::new), measuring time on `clock`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroMaxKeys`] if `max_keys` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::<u64, _>::with_clock(Quota::per_second(1)?, 10, ManualClock::new())?;
    /// assert!(limiter.check(&7).is_ok());
    /// assert!(limiter.check(&7).is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_clock(quota: Quota, max_keys: usize, clock: C) -> Result<Self, QuotaError> {
        Self::with_quotas([quota], max_keys, clock)
    }

    /// A keyed limiter whose every key has one window per quota in `quotas`, decided all or
    /// nothing (invariant 5), measuring time on `clock`. An empty list is
    /// [`QuotaError::NoQuotas`]; `max_keys = 0` is [`QuotaError::ZeroMaxKeys`].
    ///
    /// # Errors
    ///
    /// [`QuotaError::NoQuotas`] if `quotas` is empty; [`QuotaError::ZeroMaxKeys`] if `max_keys` is
    /// 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::{KeyedLimiter, LimitError}, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let per_client = KeyedLimiter::with_quotas(
    ///     [Quota::per_second(10)?, Quota::per_minute(100)?, Quota::per_hour(1_000)?],
    ///     100_000,
    ///     clock.clone(),
    /// )?;
    /// per_client.check_n("alice", 10)?;
    /// let refused = per_client.decide("alice", 1);
    /// assert_eq!(refused.refused_by(), Some(0));
    /// // A refusal charged no window: the per-minute window still has 90.
    /// assert_eq!(refused.window(1).unwrap().remaining, 90);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_quotas(
        quotas: impl IntoIterator<Item = Quota>,
        max_keys: usize,
        clock: C,
    ) -> Result<Self, QuotaError> {
        let rates: Vec<Rate> = quotas.into_iter().map(|q| q.rate()).collect();
        if rates.is_empty() {
            return Err(QuotaError::NoQuotas);
        }
        if max_keys == 0 {
            return Err(QuotaError::ZeroMaxKeys);
        }
        Ok(KeyedLimiter {
            shards: Shards::new(&rates),
            hasher: HashState::default(),
            windows: rates.len(),
            quotas_for: None,
            max_keys,
            len: CachePadded::new(AtomicUsize::new(0)),
            evicted: AtomicU64::new(0),
            writer: Mutex::new(()),
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            digest: (RandomState::new(), RandomState::new()),
            clock,
        })
    }
}

impl<K: Hash + Eq, C: Clock, S: BuildHasher> KeyedLimiter<K, C, S> {
    /// Hashes keys with `hasher` instead of [`DefaultKeyHasher`] — e.g. std's SipHash
    /// (`std::hash::RandomState`) where keys come from clients who might study the process's
    /// timing to find colliding keys. Keys already resident are kept (rehashed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::RandomState;
    /// use tollgate::{Quota, limit::KeyedLimiter};
    ///
    /// let per_token = KeyedLimiter::new(Quota::per_second(5)?, 10_000)?.with_hasher(RandomState::new());
    /// assert!(per_token.check(&"api-token-1").is_ok());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_hasher<H: BuildHasher>(self, hasher: H) -> KeyedLimiter<K, C, H> {
        let rates = self.shards.rates();
        let shards = each_width!(&self.shards, old_shards => {
            let shards = new_shards(&rates);
            for shard in old_shards.iter() {
                let mut old = shard.write();
                let epoch = old.epoch;
                for (key, entry) in old.table.drain() {
                    let hash = hasher.hash_one(&key);
                    let mut new = shards[shard_index(hash)].write();
                    new.epoch = new.epoch.max(epoch);
                    new.table
                        .insert_unique(hash, (key, entry), |(k, _)| hasher.hash_one(k));
                }
            }
            Shards::from(shards)
        });
        KeyedLimiter {
            shards,
            hasher,
            windows: self.windows,
            quotas_for: self.quotas_for,
            max_keys: self.max_keys,
            len: self.len,
            evicted: self.evicted,
            writer: self.writer,
            max_key_bytes: self.max_key_bytes,
            digest: self.digest,
            clock: self.clock,
        }
    }

    /// Gives keys for which `f` returns `Some(quota)` that quota instead of the default (for the
    /// first window; any further windows keep their defaults). `f` runs when a key is inserted
    /// (first seen, or seen again after it went idle and was swept).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tollgate::{Quota, limit::KeyedLimiter};
    ///
    /// let premium: HashMap<String, Quota> = [("acme".to_string(), Quota::per_second(100)?)].into();
    /// let limiter = KeyedLimiter::new(Quota::per_second(1)?, 1_000)?
    ///     .with_quota_for(move |key: &String| premium.get(key).copied());
    /// assert!(limiter.check_n("acme", 100).is_ok());
    /// assert!(limiter.check_n("other", 2).is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_quota_for(self, f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static) -> Self {
        self.with_quotas_for(move |key| f(key).map(|quota| vec![quota]))
    }

    /// Gives keys for which `f` returns `Some(quotas)` those windows instead of the defaults:
    /// `quotas[i]` replaces window `i`; windows past the end of `quotas` keep their defaults and
    /// quotas past the limiter's windows are ignored. `f` runs when a key is inserted. A key with
    /// its own quotas keeps them across [`set_quotas`](Self::set_quotas).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(1)?, Quota::per_hour(10)?], 100, ManualClock::new())?
    ///     .with_quotas_for(|key: &String| (key == "vip").then(|| vec![Quota::per_second(50).unwrap(), Quota::per_hour(500).unwrap()]));
    /// assert!(limiter.check_n("vip", 50).is_ok());
    /// assert!(limiter.check_n("anyone", 2).is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_quotas_for(
        mut self,
        f: impl Fn(&K) -> Option<Vec<Quota>> + Send + Sync + 'static,
    ) -> Self {
        self.quotas_for = Some(QuotasFor(Box::new(f)));
        self
    }

    /// Keys given through [`KeyedLimits`] longer than `bytes` are stored as a fixed-size keyed
    /// digest (default 256 bytes), so no client controls how much memory its key takes.
    ///
    /// The digest is `"\0#"` and 32 hex digits: 128 bits from two SipHash-1-3 instances keyed
    /// with independent random 128-bit secrets generated for this limiter, which never leave the
    /// process. Two different long keys share a state only if their digests collide: without the
    /// secrets a client cannot compute digests, so it can do no better than chance — for `m`
    /// long keys, a collision anywhere has probability about `m² / 2^129` (below 10^-20 for a
    /// billion keys) — and a collision merges two clients' limits (both limited together), never
    /// lifts one. A short key equals a digest only if a client guessed 128 secret-keyed bits.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::{KeyedLimiter, KeyedLimits}};
    /// let limiter = KeyedLimiter::<String>::new(Quota::per_second(1)?, 100)?.max_key_bytes(64);
    /// let huge = "k".repeat(15_000);
    /// assert!(limiter.check_key(&huge, 1).is_ok());
    /// assert!(limiter.check_key(&huge, 1).is_err()); // the same key, digested the same way
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// `key` as stored through [`KeyedLimits`]: itself, or its digest (invariant 7).
    fn bounded<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if key.len() <= self.max_key_bytes {
            return Cow::Borrowed(key);
        }
        let digest = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write(key.as_bytes());
            hasher.finish()
        };
        Cow::Owned(format!(
            "\0#{:016x}{:016x}",
            digest(&self.digest.0),
            digest(&self.digest.1)
        ))
    }

    /// The default quotas, one per window.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter};
    /// let limiter = KeyedLimiter::<u8>::new(Quota::per_second(3)?, 10)?;
    /// assert_eq!(limiter.quotas(), [Quota::per_second(3)?]);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn quotas(&self) -> Vec<Quota> {
        self.shards.rates().iter().map(Quota::from_rate).collect()
    }

    /// Replaces the default quota of a one-window limiter, live, keeping every key's state. See
    /// [`set_quotas`](Self::set_quotas).
    ///
    /// # Errors
    ///
    /// [`QuotaError::WindowsMismatch`] if the limiter has more than one window.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(1)?.burst(2)?, 10, ManualClock::new())?;
    /// limiter.check_n("a", 2)?; // owes 2 tokens = 2 s
    /// limiter.set_quota(Quota::per_second(10)?.burst(2)?)?;
    /// assert_eq!(limiter.state("a").reset_after, Duration::from_millis(200)); // 2 tokens
    /// assert!(limiter.check("a").is_err()); // no fresh burst
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_quota(&self, quota: Quota) -> Result<(), QuotaError> {
        self.set_quotas([quota])
    }

    /// Replaces the default quotas, live, keeping every key's state: the tokens each key owes in
    /// each window are converted to the new rate, rounded up (as
    /// [`RateLimiter::set_quota`](crate::RateLimiter::set_quota) converts its TAT), so a reload
    /// gives nobody a fresh burst. Keys with quotas of their own keep them. The number of windows
    /// cannot change ([`QuotaError::WindowsMismatch`]). Slots reserved by waiting callers before
    /// the change are not refunded if cancelled (they count as used).
    ///
    /// # Errors
    ///
    /// [`QuotaError::WindowsMismatch`] if `quotas` does not hold one quota per window.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::{KeyedLimiter, QuotaError}, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(5)?, Quota::per_minute(50)?], 10, ManualClock::new())?;
    /// limiter.check_n("a", 5)?;
    /// limiter.set_quotas([Quota::per_second(10)?, Quota::per_minute(60)?])?;
    /// assert_eq!(limiter.state("a").remaining, 5); // owed 5, now of 10
    /// assert_eq!(limiter.set_quotas([Quota::per_second(1)?]), Err(QuotaError::WindowsMismatch));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<(), QuotaError> {
        let new: Vec<Rate> = quotas.into_iter().map(|q| q.rate()).collect();
        if new.len() != self.windows {
            return Err(QuotaError::WindowsMismatch);
        }
        let _writer = self.writer.lock();
        let now = self.clock.now();
        each_width!(&self.shards, shards => for shard in shards.iter() {
            let mut data = shard.write();
            let data = &mut *data;
            for (_, entry) in data.table.iter() {
                if entry.has_own() {
                    continue;
                }
                let view = data.view(entry);
                for (i, tat) in view.tats.iter().enumerate() {
                    // Relaxed (load and store): the write lock excludes every CAS on this TAT.
                    let old = tat.load(Ordering::Relaxed);
                    tat.store(
                        gcra::convert(old, now, &data.rates[i], &new[i]),
                        Ordering::Relaxed,
                    );
                }
            }
            data.set_rates(&new);
        });
        Ok(())
    }

    /// The key's hash (which also picks its shard: [`shard_index`]).
    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A new key's own rates, if it has any.
    fn own_rates(&self, key: &K, defaults: &[Rate]) -> Option<Box<[Rate]>> {
        let quotas = (self.quotas_for.as_ref()?.0)(key)?;
        Some(
            defaults
                .iter()
                .enumerate()
                .map(|(i, default)| quotas.get(i).map_or(*default, Quota::rate))
                .collect(),
        )
    }

    /// Takes one token for `key`, or says when. See [`check_n`](Self::check_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the token is not available now (nothing is taken); [`LimitError::TooManyKeys`] if the key is new and `max_keys` busy keys fill the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_hour(1)?, 10)?;
    /// assert!(limiter.check(&"k").is_ok());
    /// assert!(limiter.check(&"k").is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    #[inline]
    pub fn check<Q>(&self, key: &Q) -> Result<(), LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens for `key` from every window now (all or nothing), or says when. Errors:
    /// [`LimitError::NotUntil`] (`quota` names the window with the longest wait),
    /// [`LimitError::InsufficientCapacity`] (`n` over the key's smallest burst),
    /// [`LimitError::TooManyKeys`] (a new key while `max_keys` busy keys are resident).
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass); [`LimitError::TooManyKeys`] if the key is new and `max_keys` busy keys fill the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::{KeyedLimiter, LimitError}, time::ManualClock};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(5)?, 1, ManualClock::new())?;
    /// limiter.check_n(&1, 5)?;
    /// // Key 1 is busy and the limiter holds one key: a new key is refused, not key 1 evicted.
    /// assert_eq!(limiter.check(&2), Err(LimitError::TooManyKeys { max_keys: 1 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn check_n<Q>(&self, key: &Q, n: u64) -> Result<(), LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        // The lookup is written out here rather than through `on_entry`: its nested
        // `Result<Result<..>>` cost the hot path a round trip of the error through the stack
        // (callgrind: 231 → 207 instructions per check; docs/benchmarks.md).
        let hash = self.hash(key);
        each_width!(&self.shards, shards => {
            let shard = &shards[shard_index(hash)];
            {
                let data = shard.read();
                if let Some((_, entry)) = data.table.find(hash, |(k, _)| k.borrow() == key) {
                    if let Some(tat) = data.lone_default(entry, n) {
                        return take_one(tat, &data.first, now, n);
                    }
                    return check_view(&data.view(entry), now, n);
                }
            }
            self.insert_slow(shard, hash, key, n, now, |view| check_view(view, now, n))?
        })
    }

    /// [`check_n`](Self::check_n) with every window's state as this decision saw it (a
    /// [`Decision`]): the numbers for `RateLimit` headers, consistent with the verdict by
    /// construction.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(2)?, Quota::per_minute(30)?], 10, ManualClock::new())?;
    /// let first = limiter.decide("a", 2);
    /// assert!(first.is_allowed());
    /// assert_eq!(first.window(1).unwrap().remaining, 28);
    /// let refused = limiter.decide("a", 1);
    /// assert_eq!(refused.refused_by(), Some(0));
    /// assert_eq!(refused.window(0).unwrap().remaining, 0);
    /// assert_eq!(refused.window(0).unwrap().retry_after, Duration::from_millis(500));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    #[inline]
    pub fn decide<Q>(&self, key: &Q, n: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        // The lookup written out, as in `check_n` (no nested `Result` on the hot path).
        let hash = self.hash(key);
        // Made only where the windows are recorded one by one (not on the one-window fast
        // path, which builds its decision at once): an unused record of two windows cleared on
        // every decision was a tenth of the fast path's instructions.
        let mut sights = None;
        let result = each_width!(&self.shards, shards => {
            let shard = &shards[shard_index(hash)];
            let found = {
                let data = shard.read();
                match data.table.find(hash, |(k, _)| k.borrow() == key) {
                    Some((_, entry)) => match data.lone_default(entry, n) {
                        // The one-window fast path, as in `check_n`: its decision (never
                        // `TooManyKeys`, the key is resident) built where it is returned, with
                        // no record of windows built first and moved into it.
                        Some(tat) => {
                            let (result, tat) = match take_one_seen(tat, &data.first, now, n) {
                                Ok(tat) => (Ok(()), tat),
                                Err((err, tat)) => (Err(err), tat),
                            };
                            let sight = Sight { tat, rate: data.first };
                            drop(data);
                            return Decision::one(result, Source::Memory, n, now, &sight);
                        }
                        None => {
                            sights = Some(SightsBuilder::with_capacity(self.windows));
                            Some(decide_view(&data.view(entry), now, n, &mut sights))
                        }
                    },
                    None => None,
                }
            };
            match found {
                Some(result) => result,
                None => self
                    .insert_slow(shard, hash, key, n, now, |view| {
                        sights = Some(SightsBuilder::with_capacity(self.windows));
                        decide_view(view, now, n, &mut sights)
                    })
                    .and_then(|result| result),
            }
        });
        match (&result, sights) {
            (Err(LimitError::TooManyKeys { .. }), _) | (_, None) => {
                Decision::without_windows(result, Source::Memory)
            }
            (_, Some(sights)) => Decision::new(result, Source::Memory, n, now, sights),
        }
    }

    /// [`decide`](Self::decide) with a resident key's one-window allowance answered as the
    /// window's state alone, no [`Decision`] built (see [`KeyedLimits::decide_fast`]): the same
    /// fast path as `decide`'s, and every other request exactly `decide`'s.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::{FastDecision, KeyedLimiter}, time::ManualClock};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(3)?, 10, ManualClock::new())?;
    /// assert!(limiter.decide(&7, 1).is_allowed()); // key 7 is resident from now on
    /// match limiter.decide_fast(&7, 1) {
    ///     FastDecision::Allowed(window) => assert_eq!(window.remaining, 1),
    ///     FastDecision::Full(decision) => panic!("expected the quick answer: {decision:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn decide_fast<Q>(&self, key: &Q, n: u64) -> FastDecision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // A limiter of several windows never has the quick answer: straight to `decide`, not a
        // lookup, a hash and a clock read made twice on every call.
        if self.windows != 1 {
            return FastDecision::Full(self.decide(key, n));
        }
        let now = self.clock.now();
        let hash = self.hash(key);
        each_width!(&self.shards, shards => {
            let data = shards[shard_index(hash)].read();
            if let Some((_, entry)) = data.table.find(hash, |(k, _)| k.borrow() == key)
                && let Some(tat) = data.lone_default(entry, n)
            {
                let rate = data.first;
                let result = take_one_seen(tat, &rate, now, n);
                drop(data);
                return match result {
                    Ok(tat) => FastDecision::Allowed(decision::window_state_of(
                        &Sight { tat, rate },
                        now,
                        n,
                    )),
                    // Nothing taken: the refusal in full, as `decide` reports it.
                    Err((err, tat)) => FastDecision::Full(Decision::one(
                        Err(err),
                        Source::Memory,
                        n,
                        now,
                        &Sight { tat, rate },
                    )),
                };
            }
        });
        // A new key, or a key with windows of its own: nothing was taken above.
        FastDecision::Full(self.decide(key, n))
    }

    /// Blocks until one token for `key` is granted or `token` is cancelled. See
    /// [`wait_n`](Self::wait_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline; [`LimitError::TooManyKeys`] if the key is new and `max_keys` busy keys fill the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Quota, limit::KeyedLimiter};
    /// let per_host = KeyedLimiter::new(Quota::per_second(1_000)?, 100)?;
    /// let token = CancelToken::new();
    /// for _ in 0..1_005 {
    ///     per_host.wait(&"api.example.com", &token)?; // 1000 at once, then one per ms
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn wait<Q>(&self, key: &Q, token: &CancelToken) -> Result<(), LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.wait_n(key, 1, token)
    }

    /// Blocks until `n` tokens for `key` are granted in every window, or `token` is cancelled:
    /// the keyed form of [`RateLimiter::wait_n`](crate::RateLimiter::wait_n).
    ///
    /// The wait reserves a slot in every window of the key first (so one key's waiters are
    /// served in arrival order, each woken once at its instant), then parks through the clock
    /// with no lock held (invariant 6).
    ///
    /// * `n` above the key's smallest burst: [`LimitError::InsufficientCapacity`] at once.
    /// * A new key while `max_keys` busy keys are resident: [`LimitError::TooManyKeys`] at once.
    /// * The latest slot is after `token`'s deadline: [`LimitError::WouldExceedDeadline`] at
    ///   once, taking nothing.
    /// * `token` cancelled: the part of each slot not yet due is given back (later waiters keep
    ///   their slots) and the result is [`LimitError::Cancelled`]. Cancelled (or its deadline
    ///   reached) at the instant the slots come due: the slots win, the wait succeeds.
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline;
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass); [`LimitError::TooManyKeys`] if the key is new and `max_keys` busy keys fill the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, Quota, limit::{KeyedLimiter, LimitError}, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(2)?, 100, clock.clone())?;
    /// limiter.check_n(&"a", 2)?;
    /// // The next token for "a" is 500 ms away; a token with 100 ms left fails at once.
    /// let hurried = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_millis(100));
    /// assert!(matches!(limiter.wait(&"a", &hurried), Err(LimitError::WouldExceedDeadline { .. })));
    /// // Another key does not wait at all.
    /// limiter.wait(&"b", CancelToken::never())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_n<Q>(&self, key: &Q, n: u64, token: &CancelToken) -> Result<(), LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if token.is_cancelled() {
            return Err(core::cancelled(token));
        }
        let now = self.clock.now();
        let latest = token.deadline_in_clock(now);
        let held = self.on_entry(key, n, now, |view| reserve_all(view, now, n, latest))??;
        let at = held.iter().map(|h| h.slot.at).max().unwrap_or(now);
        if at <= now {
            return Ok(());
        }
        core::wait_slot(&self.clock, at, token, || self.refund(key, &held))
    }

    /// Takes back what an allowed [`decide`](Self::decide) for `key` charged, because the
    /// request it admitted was refused elsewhere (another limiter of an all-or-nothing set) and
    /// never ran. Whatever later requests charged on top keeps its slot (`gcra::undo`); a window
    /// whose quota changed since (`set_quotas`) keeps the charge (strict, invariant 4). Whether
    /// anything came back. A refused decision charged nothing: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_hour(1)?, 10, ManualClock::new())?;
    /// let taken = limiter.decide("k", 1);
    /// assert!(taken.is_allowed());
    /// assert!(limiter.undo("k", &taken));
    /// assert!(limiter.decide("k", 1).is_allowed());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn undo<Q>(&self, key: &Q, decision: &Decision) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        each_width!(&self.shards, shards => {
            let data = shards[shard_index(hash)].read();
            let Some((_, entry)) = data.table.find(hash, |(k, _)| k.borrow() == key) else {
                return false; // removed, debt and all (invariant 2: only idle keys are swept)
            };
            undo_view(&data.view(entry), decision)
        })
    }

    /// Lets nothing pass for `key` for `pause` from now in any window, then resumes from an
    /// empty burst (a 429's `Retry-After` for one host or client). Never loosens a key that owes
    /// more. A new key is inserted to hold the pause (at the key cap with every key busy, the
    /// pause is dropped: the key was not tracked, and tracking it would need to evict a busy one).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
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
    pub fn penalize<Q>(&self, key: &Q, pause: Duration)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let pause = duration_to_nanos(pause);
        // n = 1 only to pass `on_entry`'s request checks; nothing is taken.
        let _ = self.on_entry(key, 1, now, |view| {
            for i in 0..view.tats.len() {
                core::penalize(&view.cell(i), now, pause);
            }
        });
    }

    /// Runs `decide` on `key`'s windows under its shard's read lock, inserting the key first if
    /// it is absent. Requests that can never touch state (`n = 0`, `n` over the smallest burst)
    /// are decided on a full entry that is not inserted.
    #[inline]
    fn on_entry<Q, T>(
        &self,
        key: &Q,
        n: u64,
        now: u64,
        decide: impl FnOnce(&View<'_>) -> T,
    ) -> Result<T, LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hash(key);
        each_width!(&self.shards, shards => {
            let shard = &shards[shard_index(hash)];
            {
                let data = shard.read();
                if let Some((_, entry)) = data.table.find(hash, |(k, _)| k.borrow() == key) {
                    return Ok(decide(&data.view(entry)));
                }
            }
            self.insert_slow(shard, hash, key, n, now, decide)
        })
    }

    #[cold]
    fn insert_slow<Q, T, const W: usize>(
        &self,
        shard: &Shard<K, W>,
        hash: u64,
        key: &Q,
        n: u64,
        now: u64,
        decide: impl FnOnce(&View<'_>) -> T,
    ) -> Result<T, LimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let owned = key.to_owned();
        let own = {
            let data = shard.read();
            let own = self.own_rates(&owned, &data.rates);
            let full = data.full(self.windows, own.clone());
            let view = data.view(&full);
            if n > view.burst() || n == 0 {
                return Ok(decide(&view));
            }
            own
        };
        let mut owned = Some((owned, own));
        let mut swept_all = false;
        let data = loop {
            let mut data = shard.write();
            if data.table.find(hash, |(k, _)| k.borrow() == key).is_some() {
                break data;
            }
            // Relaxed: `len` is only a counter for the cap; each shard's map is guarded by its
            // lock, and fetch_add makes concurrent reservations of the last place exclusive.
            if self.len.fetch_add(1, Ordering::Relaxed) < self.max_keys {
                // An absent key is full (invariant 2): insert it full, then decide on it under
                // the write lock, which excludes every other decision on this shard.
                let (owned, own) = owned.take().expect("inserted once");
                data.table.insert_unique(
                    hash,
                    (owned, Entry::full(self.windows, own)),
                    |(k, _)| self.hasher.hash_one(k),
                );
                break data;
            }
            // Relaxed: gives back the place just reserved (see above).
            self.len.fetch_sub(1, Ordering::Relaxed);
            if self.sweep_map(&mut data.table, now) > 0 {
                continue;
            }
            drop(data);
            if swept_all {
                return Err(LimitError::TooManyKeys {
                    max_keys: self.max_keys,
                });
            }
            self.sweep_at(now);
            swept_all = true;
        };
        let (_, entry) = data
            .table
            .find(hash, |(k, _)| k.borrow() == key)
            .expect("found or inserted under this lock");
        Ok(decide(&data.view(entry)))
    }

    /// Gives back what a cancelled wait's slots can (invariant 6), if the key is still resident.
    fn refund<Q>(&self, key: &Q, held: &[Held])
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.hash(key);
        each_width!(&self.shards, shards => {
            let data = shards[shard_index(hash)].read();
            let Some((_, entry)) = data.table.find(hash, |(k, _)| k.borrow() == key) else {
                return; // removed by `retain`, debt and all (invariant 6)
            };
            let view = data.view(entry);
            let at = (held.len() == 1).then_some(now);
            for (i, held) in held.iter().enumerate() {
                core::give_back(&view.cell(i), held, at);
            }
        });
    }

    /// Removes the idle keys of one locked shard; returns how many.
    fn sweep_map<const W: usize>(&self, table: &mut HashTable<(K, Entry<W>)>, now: u64) -> usize {
        let before = table.len();
        table.retain(|(_, entry)| !entry.idle(now));
        let removed = before - table.len();
        // Relaxed: counters only (invariant 3).
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    fn sweep_at(&self, now: u64) -> usize {
        each_width!(&self.shards, shards => shards
            .iter()
            .map(|shard| self.sweep_map(&mut shard.write().table, now))
            .sum())
    }

    /// Removes every idle key now (they carry no state: their next decision is unchanged);
    /// returns how many. Inserts at the cap do this on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(1)?, 100, clock.clone())?;
    /// limiter.check(&"a").unwrap();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(limiter.sweep(), 1);
    /// assert!(limiter.is_empty());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.clock.now())
    }

    /// Keeps only the keys for which `keep` returns true (removed keys start full next time).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 100)?;
    /// for key in 0..10u32 {
    ///     limiter.check(&key).unwrap();
    /// }
    /// limiter.retain(|key| key % 2 == 0);
    /// assert_eq!(limiter.len(), 5);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        each_width!(&self.shards, shards => for shard in shards.iter() {
            let mut data = shard.write();
            let before = data.table.len();
            data.table.retain(|(key, _)| keep(key));
            // Relaxed: counter only (invariant 3).
            self.len
                .fetch_sub(before - data.table.len(), Ordering::Relaxed);
        });
    }

    /// Resident keys (never more than `max_keys`).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 100)?;
    /// limiter.check(&"x").unwrap();
    /// assert_eq!(limiter.len(), 1);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
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
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let clock = ManualClock::new();
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(1)?, 2, clock.clone())?;
    /// limiter.check(&1).unwrap();
    /// limiter.check(&2).unwrap();
    /// clock.advance(Duration::from_secs(1));
    /// limiter.check(&3).unwrap(); // at the cap: idle keys are swept to make room
    /// limiter.sweep(); // and any idle key left goes now
    /// assert_eq!(limiter.evictions(), 2);
    /// assert_eq!(limiter.len(), 1);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
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
    /// let limiter = tollgate::limit::KeyedLimiter::<u8>::new(tollgate::Quota::per_second(1)?, 100)?;
    /// assert!(limiter.is_empty());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Peeks at `key` without taking anything (an absent key is full): the fewest remaining, the
    /// longest waits and the smallest burst over its windows.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(3)?, 100)?;
    /// limiter.check(&"k").unwrap();
    /// assert_eq!(limiter.state(&"k").remaining, 2);
    /// assert_eq!(limiter.state(&"new").remaining, 3);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn state<Q>(&self, key: &Q) -> LimitState
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.hash(key);
        let merge = |view: &View<'_>| {
            merge_states((0..view.tats.len()).map(|i| core::peek(&view.cell(i)).limit_state(now)))
        };
        each_width!(&self.shards, shards => {
            let data = shards[shard_index(hash)].read();
            match data.table.find(hash, |(k, _)| k.borrow() == key) {
                Some((_, entry)) => merge(&data.view(entry)),
                None => {
                    // An absent key is full, with the quotas it would be inserted with.
                    let own = match &self.quotas_for {
                        Some(_) => self.own_rates(&key.to_owned(), &data.rates),
                        None => None,
                    };
                    let full = data.full(self.windows, own);
                    merge(&data.view(&full))
                }
            }
        })
    }
}

/// Combines window states: the fewest remaining, the smallest burst, the longest waits.
pub(crate) fn merge_states(states: impl Iterator<Item = LimitState>) -> LimitState {
    states
        .reduce(|a, b| LimitState {
            remaining: a.remaining.min(b.remaining),
            burst: a.burst.min(b.burst),
            retry_after: a.retry_after.max(b.retry_after),
            reset_after: a.reset_after.max(b.reset_after),
        })
        .unwrap_or(LimitState {
            remaining: 0,
            burst: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
        })
}

/// The shard of a key's hash: bits 40..44, since the table uses the low bits for buckets and
/// the top 7 for its control bytes.
#[inline]
fn shard_index(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

/// `decide` on a key's windows: every window's sight recorded into `sights`.
#[inline]
fn decide_view(
    view: &View<'_>,
    now: u64,
    n: u64,
    sights: &mut Option<SightsBuilder>,
) -> Result<(), LimitError> {
    if view.tats.len() == 1 {
        let (result, sight) = match core::take(&view.cell(0), now, n) {
            Ok(sight) => (Ok(()), sight),
            Err((err, sight)) => (Err(err), sight),
        };
        if let Some(sights) = sights {
            sights.set(0, sight);
        }
        result
    } else {
        decide_all(view, now, n, sights)
    }
}

/// `undo` on a resident key's windows.
fn undo_view(view: &View<'_>, decision: &Decision) -> bool {
    let mut gave = false;
    for (i, (rate, slot)) in decision.charges().enumerate() {
        if i >= view.tats.len() {
            break;
        }
        let cell = view.cell(i);
        let mut seen = cell.read();
        if seen.rate != rate {
            continue; // re-rated since the decision: keep the charge (invariant 4)
        }
        while let Some(tat) = gcra::undo(seen.tat, &slot) {
            match cell.replace(&seen, tat) {
                Ok(()) => {
                    gave = true;
                    break;
                }
                Err(current) => seen = current,
            }
        }
    }
    gave
}

/// `check_n` on a key's windows: one window is a single `core::take`, several are
/// `decide_all` without recording.
#[inline]
fn check_view(view: &View<'_>, now: u64, n: u64) -> Result<(), LimitError> {
    match (view.tats, view.rates) {
        ([tat], [rate]) if n != 0 && n <= rate.burst => take_one(tat, rate, now, n),
        ([_], _) => match core::take(&view.cell(0), now, n) {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err),
        },
        _ => decide_all(view, now, n, &mut None),
    }
}

/// `core::take` on one window for `1 ≤ n ≤ burst`, when nothing of the window's state is wanted
/// back: the same decision (`gcra::check`, then a CAS from exactly the TAT decided on, deciding
/// again on the TAT a lost CAS returns), reading the rate in place instead of copying it into a
/// `Seen`. The keyed one-window `check_n` is the hottest keyed path, and the copy (with the
/// `Seen` it lives in) was a third of its instructions (docs/benchmarks.md, issue 11).
#[inline]
fn take_one(tat: &AtomicU64, rate: &Rate, now: u64, n: u64) -> Result<(), LimitError> {
    take_one_seen(tat, rate, now, n)
        .map(|_| ())
        .map_err(|(err, _)| err)
}

/// [`take_one`], also giving the TAT as the decision left it (allowed) or saw it (refused): the
/// `Sight` `core::take` reports (a keyed cell's every read is a checked one).
#[inline]
fn take_one_seen(tat: &AtomicU64, rate: &Rate, now: u64, n: u64) -> Result<u64, (LimitError, u64)> {
    // Relaxed (load and CAS): as `KeyCell::read` / `KeyCell::replace` — the TAT guards no other
    // data, the rate cannot change under the shard's read lock, and the CAS validates the value
    // decided on.
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        match gcra::check(current, now, rate, n) {
            Ok(next) => {
                match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(next),
                    Err(actual) => current = actual,
                }
            }
            Err(wait) => return Err((core::not_until(now, wait), current)),
        }
    }
}

/// Several windows, all or nothing (invariant 5); records each window's sight when asked.
#[inline]
fn decide_all(
    view: &View<'_>,
    now: u64,
    n: u64,
    sights: &mut Option<SightsBuilder>,
) -> Result<(), LimitError> {
    let windows = view.tats.len();
    if n == 0 || n > view.burst() {
        if let Some(sights) = sights {
            for i in 0..windows {
                sights.set(i, core::peek(&view.cell(i)));
            }
        }
        return if n == 0 {
            Ok(())
        } else {
            Err(LimitError::InsufficientCapacity {
                requested: n,
                burst: view.burst(),
            })
        };
    }
    loop {
        // Probe: a refusal here writes nothing, and names the window with the longest wait.
        // The TATs probed are kept (the rates cannot change under the read lock), so a refusal
        // records exactly what it saw, and an admission records only its charges.
        let mut seen = [0u64; PROBED];
        let mut worst: Option<(usize, u64)> = None;
        for i in 0..windows {
            let (wait, sight) = match core::probe(&view.cell(i), now, n) {
                Ok(sight) => (None, sight),
                Err((wait, sight)) => (Some(wait), sight),
            };
            match seen.get_mut(i) {
                Some(tat) => *tat = sight.tat,
                None => {
                    if let Some(sights) = sights {
                        sights.set(i, sight);
                    }
                }
            }
            if let Some(wait) = wait
                && worst.is_none_or(|(_, w)| wait > w)
            {
                worst = Some((i, wait));
            }
        }
        if let Some((quota, wait)) = worst {
            if let Some(sights) = sights {
                for (i, &tat) in seen.iter().enumerate().take(windows) {
                    let rate = view.rates[i];
                    sights.set(i, Sight { tat, rate });
                }
            }
            return Err(LimitError::NotUntil {
                retry_after: Duration::from_nanos(wait),
                earliest: now.saturating_add(wait),
                quota,
            });
        }
        if charge_from(view, 0, now, n, sights) {
            return Ok(());
        }
        // A window refused after a race: the earlier charges were undone; decide again.
    }
}

/// Charges `n` at `now` to windows `i..`, or to none of them (undoing on a refusal); recursion
/// keeps each held slot on the stack (no allocation; depth = windows).
#[inline]
fn charge_from(
    view: &View<'_>,
    i: usize,
    now: u64,
    n: u64,
    sights: &mut Option<SightsBuilder>,
) -> bool {
    if i == view.tats.len() {
        return true;
    }
    let cell = view.cell(i);
    let Ok(held) = core::reserve(&cell, now, n, now) else {
        return false;
    };
    if charge_from(view, i + 1, now, n, sights) {
        if let Some(sights) = sights {
            sights.set(i, held.sight);
        }
        true
    } else {
        core::give_back(&cell, &held, None);
        false
    }
}

/// Reserves `n` in every window with slots no later than `latest`, or nothing.
fn reserve_all(view: &View<'_>, now: u64, n: u64, latest: u64) -> Result<Vec<Held>, LimitError> {
    if n > view.burst() {
        return Err(LimitError::InsufficientCapacity {
            requested: n,
            burst: view.burst(),
        });
    }
    let mut held = Vec::with_capacity(view.tats.len());
    for i in 0..view.tats.len() {
        match core::reserve(&view.cell(i), now, n, latest) {
            Ok(slot) => held.push(slot),
            Err((err, _)) => {
                for (j, slot) in held.iter().enumerate() {
                    core::give_back(&view.cell(j), slot, None);
                }
                return Err(match err {
                    LimitError::NotUntil {
                        retry_after,
                        earliest,
                        ..
                    } => LimitError::NotUntil {
                        retry_after,
                        earliest,
                        quota: i,
                    },
                    other => other,
                });
            }
        }
    }
    Ok(held)
}

impl<C, S> KeyedLimits for KeyedLimiter<String, C, S>
where
    C: Clock,
    S: BuildHasher + Send + Sync,
{
    fn decide(&self, key: &str, n: u64) -> Decision {
        KeyedLimiter::decide(self, &*self.bounded(key), n)
    }

    fn decide_fast(&self, key: &str, n: u64) -> FastDecision {
        KeyedLimiter::decide_fast(self, &*self.bounded(key), n)
    }

    fn check_key(&self, key: &str, n: u64) -> Result<(), LimitError> {
        KeyedLimiter::check_n(self, &*self.bounded(key), n)
    }

    fn wait_key(&self, key: &str, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        KeyedLimiter::wait_n(self, &*self.bounded(key), n, token)
    }

    fn state_key(&self, key: &str) -> LimitState {
        KeyedLimiter::state(self, &*self.bounded(key))
    }

    fn penalize_key(&self, key: &str, pause: Duration) {
        KeyedLimiter::penalize(self, &*self.bounded(key), pause)
    }

    fn undo_key(&self, key: &str, decision: &Decision) -> bool {
        KeyedLimiter::undo(self, &*self.bounded(key), decision)
    }

    fn set_quotas(&self, quotas: &[Quota]) -> Result<bool, QuotaError> {
        KeyedLimiter::set_quotas(self, quotas.iter().copied()).map(|()| true)
    }
}

impl<K, C: Clock, S> fmt::Debug for KeyedLimiter<K, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quotas: Vec<Quota> = self.shards.rates().iter().map(Quota::from_rate).collect();
        f.debug_struct("KeyedLimiter")
            .field("quotas", &quotas)
            // Relaxed: a snapshot for display.
            .field("keys", &self.len.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Entry;
    use std::mem::size_of;

    /// The memory a `u64` key costs in the table: 24 bytes with one window, 32 with two or more
    /// (the sizes `Shards` documents).
    #[test]
    fn an_entry_is_as_small_as_its_width() {
        assert_eq!(size_of::<(u64, Entry<1>)>(), 24);
        assert_eq!(size_of::<(u64, Entry<2>)>(), 32);
    }

    /// The one-window fast path decides on the shard's `first` rate, which `set_quotas` must
    /// replace with the rest: an existing key sees the new burst at once, in `check_n`,
    /// `decide` and `state` alike.
    #[test]
    fn the_fast_path_follows_a_quota_change() {
        use crate::{Quota, limit::LimitError, time::ManualClock};
        let clock = ManualClock::new();
        let limiter =
            super::KeyedLimiter::with_clock(Quota::per_hour(1).unwrap(), 10, clock).unwrap();
        limiter.check(&7u64).unwrap();
        assert!(matches!(
            limiter.check(&7),
            Err(LimitError::NotUntil { .. })
        ));
        limiter
            .set_quota(Quota::per_second(10).unwrap().burst(5).unwrap())
            .unwrap();
        // The one token owed at 1/hour is 0.1 s owed at 10/s: 4 of 5 left.
        assert_eq!(limiter.state(&7).remaining, 4);
        assert_eq!(limiter.check_n(&7, 4), Ok(()));
        assert!(matches!(
            limiter.check(&7),
            Err(LimitError::NotUntil { .. })
        ));
        assert!(matches!(
            limiter.check_n(&8, 6),
            Err(LimitError::InsufficientCapacity { .. })
        ));
        assert!(limiter.decide(&9, 5).is_allowed());
    }
}
