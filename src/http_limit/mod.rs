//! Per-client HTTP limiting as a library layer: (method, path, headers, peer address) in, a
//! [`Verdict`] out that renders the answer (429, `Retry-After`, `RateLimit-Policy`, `RateLimit`,
//! `X-RateLimit-*`, a JSON body). Framework-agnostic and synchronous: any server that can hand
//! over a method, a path, its header lines and the peer's address calls [`HttpLimiter::decide`].
//!
//! Invariants:
//!
//! 1. Every rule that matches a request must allow it, all or nothing across rules: rules are
//!    decided in order, and when one refuses, the charges of the rules before it are undone
//!    through [`KeyedLimits::undo_key`] (a backend without undo keeps them: strict, never loose).
//! 2. A verdict's headers come from the per-window states of the decisions that made it, so a
//!    429 always names a refusing window whose remaining is 0 (for one token) and a positive
//!    retry-after. Text made once per rule at build time (its `RateLimit-Policy` items, its
//!    bursts in decimal) stands in for those states only while every decided window of the rule
//!    still has the burst the text was made with; otherwise the items are written from the
//!    states. A rule's whole steady head (every window one token after idle) stands in only for
//!    a verdict of that rule alone whose every window says exactly its numbers (remaining
//!    `burst − 1`, reset in whole seconds as made).
//! 3. Dry run decides and charges exactly as enforcing would (so its counts are the counts
//!    enforcing would produce) and sets the same rate-limit headers, but its verdict always
//!    allows; what it would have refused is counted apart. A shadow rule (`Rule::dry_run`) is
//!    dry run for that rule alone: it decides, charges and counts, never refuses, and adds no
//!    window to the headers (clients see no change while it is trialled).
//! 4. The enumeration guard reads a client's "known" mark first and, for a known client, touches
//!    nothing else: only clients never served before (or forgotten after `remember`) spend the
//!    per-address budget for new clients.
//! 5. Every key handed to a backend is bounded: identity values are bounded by the identity
//!    module (invariant 3 there), a concrete path by the keyed limiter's digest of long keys.
//! 6. Abuse state (known marks, refusal counts, the deny list) lives in keyed limiters from the
//!    same backend as the rules, so with a shared backend (Redis) the fleet shares it. A ban is a
//!    `penalize_key` of `ban` on a 1-per-ms quota: banned while its remaining is 0.

#[cfg(feature = "http-types")]
mod adapter;
mod identity;
mod rule;

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

pub use identity::{Identity, IpNet, KeySource, MAX_ID_BYTES, ParseIpNetError};
pub use rule::{PathPattern, Rule, RuleError, Scope};

use identity::IdentityConfig;

use crate::clock::{Clock, MonotonicClock};
use crate::limiter::{
    Decision, FastDecision, KeyedLimiter, KeyedLimits, LimitError, Source, WindowState,
};
use crate::quota::Quota;
use crate::sync::{AtomicU64, Ordering};

/// Makes the keyed limiter of one rule (or of the abuse state) from its name and windows.
pub type BackendFn =
    dyn Fn(&str, &[Quota]) -> Result<Arc<dyn KeyedLimits>, String> + Send + Sync + 'static;

/// Configures an [`HttpLimiter`].
///
/// # Examples
///
/// ```
/// use tollgate::{Quota, time::ManualClock};
/// use tollgate::http_limit::{HttpLimiter, KeySource, Rule, Scope};
///
/// let limiter = HttpLimiter::builder()
///     .memory(ManualClock::new(), 10_000)
///     .trusted_proxy("10.0.0.0/8".parse()?)
///     .key_source(KeySource::Header("x-api-key".into()))
///     .rule(Rule::new("api", "/api/*", [Quota::per_second(1)?], Scope::Client)?)
///     .build()?;
/// let peer = "10.0.0.1".parse()?;
/// let headers = [("X-Forwarded-For", &b"198.51.100.7"[..])];
/// assert!(limiter.decide("GET", "/api/x", peer, headers).is_allowed());
/// let refused = limiter.decide("GET", "/api/y", peer, headers);
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.identity().key(), "ip:198.51.100.7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HttpLimiterBuilder {
    rules: Vec<Rule>,
    trusted: Vec<IpNet>,
    sources: Vec<KeySource>,
    secret: Option<Vec<u8>>,
    backend: Option<Box<BackendFn>>,
    dry_run: bool,
    guard: Option<(Quota, Duration)>,
    decoy_paths: Vec<PathPattern>,
    decoy_keys: Vec<String>,
    threshold: Option<Quota>,
    ban: Duration,
}

// Unwind-safe although the backend factory is a user closure that does not say so: the builder
// only calls it from `build`, by shared reference, and keeps nothing it returned on failure.
impl std::panic::UnwindSafe for HttpLimiterBuilder {}
impl std::panic::RefUnwindSafe for HttpLimiterBuilder {}

impl fmt::Debug for HttpLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLimiterBuilder")
            .field("rules", &self.rules)
            .field("trusted", &self.trusted)
            .field("sources", &self.sources)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Why an [`HttpLimiter`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

impl HttpLimiterBuilder {
    /// Keeps every rule's state in process: a [`KeyedLimiter`] per rule on `clock`, each holding
    /// at most `max_keys` busy keys (a new client beyond that is refused, never a busy one
    /// forgotten). The default backend is this on the monotonic clock with 100,000 keys.
    pub fn memory<C: Clock + Clone>(mut self, clock: C, max_keys: usize) -> Self {
        self.backend = Some(Box::new(move |_, quotas| {
            KeyedLimiter::<String, C>::with_quotas(quotas.iter().copied(), max_keys, clock.clone())
                .map(|l| Arc::new(l) as Arc<dyn KeyedLimits>)
                .map_err(|e| e.to_string())
        }));
        self
    }

    /// Any keyed backend (a `redis::RedisLimiter` per rule, for a fleet): called once per rule
    /// with the rule's name and windows, and for the abuse state (names starting with `~`).
    pub fn backend(
        mut self,
        make: impl Fn(&str, &[Quota]) -> Result<Arc<dyn KeyedLimits>, String> + Send + Sync + 'static,
    ) -> Self {
        self.backend = Some(Box::new(make));
        self
    }

    /// Adds a rule; rules are decided in the order added.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Believes `X-Forwarded-For` / `Forwarded` from peers in `net`.
    pub fn trusted_proxy(mut self, net: IpNet) -> Self {
        self.trusted.push(net);
        self
    }

    /// Adds a source of the client's key, tried in the order added before the address.
    pub fn key_source(mut self, source: KeySource) -> Self {
        self.sources.push(source);
        self
    }

    /// The secret Bearer tokens (and over-long identity values) are keyed with. Give every
    /// instance of a fleet the same one so they share a client's budget; without it, each process
    /// draws its own at random and [`build`](Self::build) logs a warning when Bearer is a source.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Decide, count and set headers, never refuse (invariant 3).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The enumeration guard: a client never served before spends one token of `new_clients`
    /// (per address); a client served within `remember` is known and never touches it.
    pub fn new_clients(mut self, new_clients: Quota, remember: Duration) -> Self {
        self.guard = Some((new_clients, remember));
        self
    }

    /// A honeypot path: whoever requests it is banned.
    pub fn decoy_path(mut self, pattern: PathPattern) -> Self {
        self.decoy_paths.push(pattern);
        self
    }

    /// A honeypot credential (a header value, Basic user or Bearer token no real client has):
    /// whoever presents it is banned.
    pub fn decoy_key(mut self, key: impl Into<String>) -> Self {
        self.decoy_keys.push(key.into());
        self
    }

    /// An address refused more often than `refusals` allows is banned.
    pub fn refusal_threshold(mut self, refusals: Quota) -> Self {
        self.threshold = Some(refusals);
        self
    }

    /// How long a ban lasts (default 10 minutes).
    pub fn ban(mut self, ban: Duration) -> Self {
        self.ban = ban;
        self
    }

    /// Builds the limiter: one keyed limiter per rule from the backend.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when the configuration can never work (see its variants).
    pub fn build(self) -> Result<HttpLimiter, BuildError> {
        let backend = match self.backend {
            Some(b) => b,
            None => HttpLimiter::builder()
                .memory(MonotonicClock, 100_000)
                .backend
                .ok_or_else(|| BuildError("no backend".into()))?,
        };
        let make = |name: &str, quotas: &[Quota]| {
            backend(name, quotas).map_err(|e| BuildError(format!("rule {name:?}: {e}")))
        };
        let mut names = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in self.rules {
            if !names.insert(rule.name.clone()) {
                return Err(BuildError(format!("two rules are named {:?}", rule.name)));
            }
            let limits = make(&rule.name, &rule.quotas)?;
            rules.push(Compiled {
                counts: RuleCounts::default(),
                limits,
                rule,
            });
        }
        let secret = match self.secret {
            Some(s) if !s.is_empty() => s,
            _ => {
                if self.sources.contains(&KeySource::Bearer) {
                    tracing::warn!(
                        "Bearer tokens are keyed with a per-process secret: instances of a fleet \
                         will not share a Bearer client's budget; configure a shared secret"
                    );
                }
                random_secret()
            }
        };
        let identity = IdentityConfig {
            trusted: self.trusted,
            sources: self.sources,
            secret: identity::hmac_key(&secret),
        };
        let ms = Quota::per(1, Duration::from_millis(1)).map_err(|e| BuildError(e.to_string()))?;
        let abusive =
            !self.decoy_paths.is_empty() || !self.decoy_keys.is_empty() || self.threshold.is_some();
        let guard = match self.guard {
            Some((quota, remember)) => Some(Guard {
                known: make("~known", &[ms])?,
                new_per_addr: make("~new", &[quota])?,
                remember,
            }),
            None => None,
        };
        let abuse = if abusive || guard.is_some() {
            Some(Abuse {
                deny: make("~deny", &[ms])?,
                refusals: match self.threshold {
                    Some(q) => Some(make("~refusals", &[q])?),
                    None => None,
                },
                decoy_paths: self.decoy_paths,
                decoy_keys: self
                    .decoy_keys
                    .iter()
                    .flat_map(|k| {
                        [
                            format!("h:{k}"),
                            format!("u:{k}"),
                            format!("b:{}", hex(&identity.hmac(k.as_bytes()))),
                        ]
                    })
                    .collect(),
                ban: self.ban,
            })
        } else {
            None
        };
        Ok(HttpLimiter {
            identity,
            text: rules.iter().map(|c| RuleText::of(&c.rule)).collect(),
            has_default: rules.iter().any(|c| c.rule.default),
            rules,
            dry_run: self.dry_run,
            guard,
            abuse,
            counts: Counts::default(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A per-process secret when none is configured (std's randomly seeded hasher: not guessable
/// from outside the process, which is all a key digest needs).
fn random_secret() -> Vec<u8> {
    use std::hash::{BuildHasher, RandomState};
    let mut secret = Vec::with_capacity(32);
    for i in 0u64..4 {
        secret.extend_from_slice(&RandomState::new().hash_one(i).to_le_bytes());
    }
    secret
}

struct Compiled {
    rule: Rule,
    limits: Arc<dyn KeyedLimits>,
    counts: RuleCounts,
}

/// A rule's decisions by result (allowed, refused, dry-run refused, undone) and source
/// (memory, Redis, fallback, lease): one increment per decision, sums read by `stats`.
#[derive(Default)]
struct RuleCounts {
    cells: [[AtomicU64; 4]; 4],
}

const ALLOWED: usize = 0;
const REFUSED: usize = 1;
const DRY_RUN_REFUSED: usize = 2;
/// Taken, then given back because a later rule refused.
const UNDONE: usize = 3;

impl RuleCounts {
    #[inline]
    fn count(&self, result: usize, source: Source) {
        let source = match source {
            Source::Memory => 0,
            Source::Redis => 1,
            Source::Fallback(_) => 2,
            Source::Lease => 3,
        };
        // Relaxed: a counter only, read by `stats`.
        self.cells[result][source].fetch_add(1, Ordering::Relaxed);
    }

    fn result(&self, result: usize) -> u64 {
        // Relaxed: counters only.
        self.cells[result]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn source(&self, source: usize) -> u64 {
        // Relaxed: counters only.
        self.cells
            .iter()
            .map(|r| r[source].load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(Default)]
struct Counts {
    banned: AtomicU64,
    denied: AtomicU64,
    guard_refused: AtomicU64,
    decoys: AtomicU64,
}

struct Guard {
    known: Arc<dyn KeyedLimits>,
    new_per_addr: Arc<dyn KeyedLimits>,
    remember: Duration,
}

struct Abuse {
    deny: Arc<dyn KeyedLimits>,
    refusals: Option<Arc<dyn KeyedLimits>>,
    decoy_paths: Vec<PathPattern>,
    decoy_keys: Vec<String>,
    ban: Duration,
}

/// Per-client HTTP limits: identity, rules, dry run, enumeration guard and abuse detection over
/// keyed limiters (in memory or Redis). See the [module docs](self) for the invariants.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, time::ManualClock};
/// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
///
/// let clock = ManualClock::new();
/// let limiter = HttpLimiter::builder()
///     .memory(clock.clone(), 1_000)
///     .rule(Rule::new("items", "/items/{id}", [Quota::per_second(2)?], Scope::Client)?)
///     .rule(Rule::new("all", "/*", [Quota::per_second(100)?], Scope::Global)?)
///     .build()?;
/// let peer = "192.0.2.9".parse()?;
/// let no_headers: [(&str, &[u8]); 0] = [];
/// for _ in 0..2 {
///     assert!(limiter.decide("GET", "/items/1", peer, no_headers).is_allowed());
/// }
/// let refused = limiter.decide("GET", "/items/2", peer, no_headers);
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.header("x-ratelimit-remaining").as_deref(), Some("0"));
/// assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.decide("GET", "/items/2", peer, no_headers).is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HttpLimiter {
    identity: IdentityConfig,
    rules: Vec<Compiled>,
    /// Every rule's header text (indexed by rule).
    text: Box<[RuleText]>,
    /// Whether some rule applies only where no other does.
    has_default: bool,
    dry_run: bool,
    guard: Option<Guard>,
    abuse: Option<Abuse>,
    counts: Counts,
}

// Unwind-safe although its keyed backends (`Arc<dyn KeyedLimits>`, possibly a user's) do not say
// so: the limiter takes no lock of its own and calls them only by shared reference; none of its
// invariants rests on their state (a backend left odd by a panic decides odd, as it would for any
// other caller). The counters are atomics. As `FanOut` (src/fanout/mod.rs).
impl std::panic::UnwindSafe for HttpLimiter {}
impl std::panic::RefUnwindSafe for HttpLimiter {}

impl fmt::Debug for HttpLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLimiter")
            .field("identity", &self.identity)
            .field(
                "rules",
                &self.rules.iter().map(|c| &c.rule).collect::<Vec<_>>(),
            )
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A rule's window refused.
    Rule {
        /// The rule's name.
        rule: String,
        /// The refusing window's index in the rule.
        window: usize,
    },
    /// A new client while the address's budget for new clients is spent.
    NewClient,
    /// The client is on the deny list.
    Banned,
    /// A rule's in-process limiter holds `max_keys` busy clients and this one is new: refused
    /// rather than a busy client forgotten (transient: clients go idle).
    KeyCap {
        /// The rule's name.
        rule: String,
    },
}

/// One window of one rule as the verdict saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleWindow {
    /// Index of the rule in the limiter (its order in [`HttpLimiter::rules`]).
    pub rule: usize,
    /// Index of the window in the rule.
    pub window: usize,
    /// The window's state after the decision.
    pub state: WindowState,
    /// The window's length (burst × interval), for `RateLimit-Policy`'s `w`.
    pub length: Duration,
}

/// The answer to one request: allowed or refused, with everything a response needs.
#[derive(Debug, Clone)]
pub struct Verdict<'l> {
    identity: Identity,
    refusal: Option<Refusal>,
    dry_run: bool,
    /// Every rule's header text, borrowed from the limiter (indexed by `RuleWindow::rule`): no
    /// reference count touched per request.
    text: &'l [RuleText],
    windows: Windows,
    /// The window the `X-RateLimit-*` headers describe (invariant 2).
    focus: Option<usize>,
    retry_after: Duration,
    /// Where the rules' decisions came from, the least authoritative of them (rank, name).
    source: Option<(u8, &'static str)>,
}

/// Two decimal digits per pair, `00` to `99` (as `itoa`): a number takes one division per two
/// digits, and its digits are slices of this `str` (no UTF-8 check per number).
const PAIRS: &str = "\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal to `out` (no `fmt`, two digits a step).
#[inline]
fn push_u64(out: &mut String, mut n: u64) {
    // Pairs below the leading one, least significant first (a u64 has at most 20 digits).
    let mut pairs = [0u8; 10];
    let mut len = 0;
    while n >= 100 {
        pairs[len] = (n % 100) as u8;
        n /= 100;
        len += 1;
    }
    // Each arm copies a length the compiler knows (one `str` of either length became a
    // `memcpy` call per number).
    if n >= 10 {
        let lead = n as usize * 2;
        out.push_str(&PAIRS[lead..lead + 2]);
    } else {
        out.push(char::from(b'0' + n as u8));
    }
    for &pair in pairs[..len].iter().rev() {
        let at = usize::from(pair) * 2;
        out.push_str(&PAIRS[at..at + 2]);
    }
}

/// A number's decimal digits in a stack buffer, two a step from [`PAIRS`]: worked out once and
/// appended as bytes wherever the number appears (a head written into `Vec<u8>` needs no UTF-8
/// check, and a number repeated in `X-RateLimit-*` is not worked out twice). The digits end at
/// byte 20 of a 40-byte buffer, so appending them copies a fixed 20 bytes (no `memcpy` call
/// for a few bytes, no count of digits first) and cuts the excess.
#[derive(Clone, Copy)]
struct Digits {
    buf: [u8; 40],
    start: usize,
}

impl Digits {
    const END: usize = 20;

    #[inline(always)]
    fn of(mut n: u64) -> Digits {
        let pairs = PAIRS.as_bytes();
        let mut buf = [0u8; 40];
        let mut at = Self::END;
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&pairs[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&pairs[pair..pair + 2]);
        } else {
            at -= 1;
            buf[at] = b'0' + n as u8;
        }
        Digits { buf, start: at }
    }

    /// Appends the digits: 20 bytes copied from their start (a length the compiler knows),
    /// then cut to the number's length.
    #[inline(always)]
    fn push(&self, out: &mut Vec<u8>) {
        let end = out.len() + (Self::END - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + Self::END]);
        out.truncate(end);
    }
}

/// Where a response head is written: `String` ([`Verdict::write_head`]) or `Vec<u8>`
/// ([`Verdict::write_head_bytes`]); the text is the same byte for byte.
trait HeadOut {
    fn text(&mut self, s: &str);
    fn number(&mut self, n: u64);
    fn len(&self) -> usize;
    /// Appends a copy of `range` of what is already written (a number written just before).
    fn again(&mut self, range: Range<usize>);
}

impl HeadOut for String {
    #[inline]
    fn text(&mut self, s: &str) {
        self.push_str(s);
    }
    #[inline]
    fn number(&mut self, n: u64) {
        push_u64(self, n);
    }
    #[inline]
    fn len(&self) -> usize {
        String::len(self)
    }
    #[inline]
    fn again(&mut self, range: Range<usize>) {
        self.extend_from_within(range);
    }
}

impl HeadOut for Vec<u8> {
    #[inline]
    fn text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    #[inline]
    fn number(&mut self, n: u64) {
        Digits::of(n).push(self);
    }
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }
    #[inline]
    fn again(&mut self, range: Range<usize>) {
        self.extend_from_within(range);
    }
}

/// A rule's constant header text, made once when the limiter is built: its window labels, and
/// its `RateLimit-Policy` items as they read while the rule's windows keep the bursts they were
/// built with (a `set_quotas` in place changes a burst: the items are then written afresh).
#[derive(Debug)]
struct RuleText {
    labels: Box<[Box<str>]>,
    /// `"label";q=BURST;w=SECONDS` for every window, `, `-separated.
    policy: Box<str>,
    /// The bursts `policy` was written with, one per window.
    bursts: Box<[u64]>,
    /// Those bursts in decimal (`X-RateLimit-Limit`).
    burst_digits: Box<[Box<str>]>,
    /// Each window's length (burst × interval), for `RuleWindow::length`: derived once, not by a
    /// division per request.
    lengths: Box<[Duration]>,
    /// The head of a verdict of this rule alone up to its first remaining, while its windows keep
    /// their bursts: `RateLimit-Policy: <policy>\r\nRateLimit: "<label 0>";r=`.
    lead: Box<str>,
    /// Per window (after the first), the text before its remaining: `, "<label>";r=`.
    item_leads: Box<[Box<str>]>,
    /// Per window, the text from the end of `RateLimit` to the focus window's remaining:
    /// `\r\nX-RateLimit-Limit: <burst>\r\nX-RateLimit-Remaining: `.
    limit_lines: Box<[Box<str>]>,
    /// Each window's `t` (seconds, rounded up) one token after idle: its emission interval.
    steady_resets: Box<[u64]>,
    /// Per focus window, the whole rate-limit head of a verdict of this rule alone in which
    /// every window has just given one token after idle (remaining `burst − 1`, reset the
    /// `steady_resets`): the state of every request of a client well within its limits. A
    /// verdict in that state is written with one copy (invariant 2: only while its windows'
    /// states say exactly these numbers).
    steady: Box<[Box<str>]>,
}

impl RuleText {
    fn of(rule: &Rule) -> RuleText {
        let labels: Box<[Box<str>]> = rule
            .labels
            .iter()
            .map(|l| l.clone().into_boxed_str())
            .collect();
        let bursts: Box<[u64]> = rule.quotas.iter().map(|q| q.burst_size()).collect();
        let mut policy = String::new();
        for (i, q) in rule.quotas.iter().enumerate() {
            let label = labels.get(i).map_or("", |l| l);
            policy_item(&mut policy, i, label, q.burst_size(), window_length(q));
        }
        let burst_digits: Box<[Box<str>]> = bursts
            .iter()
            .map(|&b| {
                let mut digits = String::new();
                push_u64(&mut digits, b);
                digits.into_boxed_str()
            })
            .collect();
        let label = |i: usize| labels.get(i).map_or("", |l| &**l);
        let lead = format!(
            "RateLimit-Policy: {policy}\r\nRateLimit: \"{}\";r=",
            label(0)
        );
        let item_leads_of = |i: usize| format!(", \"{}\";r=", label(i));
        let limit_lines_of = |i: usize| {
            format!(
                "\r\nX-RateLimit-Limit: {}\r\nX-RateLimit-Remaining: ",
                burst_digits[i]
            )
        };
        let item_leads = (0..bursts.len())
            .map(|i| item_leads_of(i).into_boxed_str())
            .collect();
        let limit_lines = (0..bursts.len())
            .map(|i| limit_lines_of(i).into_boxed_str())
            .collect();
        let steady_resets: Box<[u64]> = rule
            .quotas
            .iter()
            .map(|q| {
                let (period, count) = q.interval_ratio();
                secs_up(Duration::from_nanos(period.div_ceil(count.max(1))))
            })
            .collect();
        let steady = (0..bursts.len())
            .map(|focus| {
                let mut head = lead.clone();
                for (i, (&burst, &reset)) in bursts.iter().zip(steady_resets.iter()).enumerate() {
                    if i > 0 {
                        head.push_str(&item_leads_of(i));
                    }
                    push_u64(&mut head, burst.saturating_sub(1));
                    head.push_str(";t=");
                    push_u64(&mut head, reset);
                }
                head.push_str(&limit_lines_of(focus));
                push_u64(&mut head, bursts[focus].saturating_sub(1));
                head.push_str("\r\nX-RateLimit-Reset: ");
                push_u64(&mut head, steady_resets[focus]);
                head.push_str("\r\n");
                head.into_boxed_str()
            })
            .collect();
        RuleText {
            steady,
            steady_resets,
            lead: lead.into_boxed_str(),
            item_leads,
            limit_lines,
            labels,
            policy: policy.into_boxed_str(),
            bursts,
            burst_digits,
            lengths: rule.quotas.iter().map(window_length).collect(),
        }
    }
}

/// A window's length for `RateLimit-Policy`'s `w`: burst × interval.
fn window_length(q: &Quota) -> Duration {
    q.interval()
        .saturating_mul(u32::try_from(q.burst_size()).unwrap_or(u32::MAX))
}

/// One `RateLimit-Policy` item: `"label";q=LIMIT;w=SECONDS` (`, ` before all but the first).
#[inline]
fn policy_item(out: &mut impl HeadOut, i: usize, label: &str, limit: u64, length: Duration) {
    header_item(out, i, label, "\";q=", limit, ";w=", secs_up(length).max(1));
}

#[inline]
fn header_item(out: &mut impl HeadOut, i: usize, label: &str, a: &str, x: u64, b: &str, y: u64) {
    if i > 0 {
        out.text(", ");
    }
    out.text("\"");
    out.text(label);
    out.text(a);
    out.number(x);
    out.text(b);
    out.number(y);
}

/// Seconds, rounded up.
fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Verdict<'_> {
    /// Whether the request may proceed (always, in dry run).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.refusal.is_none() || self.dry_run
    }

    /// What refused the request (or would have, in dry run).
    #[inline]
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// Whether dry run let through a request it would have refused.
    #[inline]
    pub fn would_refuse(&self) -> bool {
        self.dry_run && self.refusal.is_some()
    }

    /// The client as identified.
    #[inline]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Every decided window.
    #[inline]
    pub fn windows(&self) -> &[RuleWindow] {
        self.windows.as_slice()
    }

    /// 200 to proceed, 429 to refuse (a ban is a 429 too, with the ban's `Retry-After`).
    #[inline]
    pub fn status(&self) -> u16 {
        if self.is_allowed() { 200 } else { 429 }
    }

    /// How long until the refused request could pass (zero when allowed).
    #[inline]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Calls `f(name, value)` for every response header: `RateLimit-Policy` and `RateLimit`
    /// (draft-ietf-httpapi-ratelimit-headers: `"name";q=..;w=..` and `"name";r=..;t=..`), the
    /// `X-RateLimit-Limit/Remaining/Reset` of the focus window, and on a 429 `Retry-After` (whole
    /// seconds, rounded up, at least 1) and `Content-Type: application/json`.
    pub fn write_headers(&self, mut f: impl FnMut(&'static str, &str)) {
        let mut line = String::new();
        if !self.windows.is_empty() {
            self.write_policy(&mut line);
            f("RateLimit-Policy", &line);
            line.clear();
            let _ = self.write_state(&mut line);
            f("RateLimit", &line);
        }
        let mut number = |f: &mut dyn FnMut(&'static str, &str), name, n| {
            line.clear();
            push_u64(&mut line, n);
            f(name, &line);
        };
        if let Some(focus) = self.focus.map(|i| &self.windows[i].state) {
            number(&mut f, "X-RateLimit-Limit", focus.limit);
            number(&mut f, "X-RateLimit-Remaining", focus.remaining);
            number(&mut f, "X-RateLimit-Reset", secs_up(focus.reset_after));
        }
        if !self.is_allowed() {
            number(&mut f, "Retry-After", secs_up(self.retry_after).max(1));
            f("Content-Type", "application/json");
        }
    }

    /// `RateLimit-Policy`'s value: each rule's items as made at build time while its windows
    /// keep their bursts, else written afresh from the decided states.
    #[inline]
    fn write_policy(&self, out: &mut impl HeadOut) {
        let mut at = 0;
        while let Some(first) = self.windows.get(at) {
            let run = &self.windows[at..];
            let len = run.iter().take_while(|w| w.rule == first.rule).count();
            let run = &run[..len];
            let text = self.text.get(first.rule);
            let fresh = text.is_some_and(|t| {
                t.bursts.len() == run.len()
                    && run
                        .iter()
                        .zip(t.bursts.iter())
                        .enumerate()
                        .all(|(i, (w, &burst))| w.window == i && w.state.limit == burst)
            });
            match text {
                Some(text) if fresh => {
                    if at > 0 {
                        out.text(", ");
                    }
                    out.text(&text.policy);
                }
                _ => {
                    for (i, w) in run.iter().enumerate() {
                        policy_item(out, at + i, self.label(w), w.state.limit, w.length);
                    }
                }
            }
            at += len;
        }
    }

    /// `RateLimit`'s value: every window's remaining and reset. Returns where the focus
    /// window's two numbers were written in `out` (for `X-RateLimit-*`, the same numbers).
    #[inline]
    fn write_state(&self, out: &mut impl HeadOut) -> Option<[Range<usize>; 2]> {
        let mut focus = None;
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                out.text(", ");
            }
            out.text("\"");
            out.text(self.label(w));
            out.text("\";r=");
            let remaining = out.len();
            out.number(w.state.remaining);
            let end = out.len();
            out.text(";t=");
            let reset = out.len();
            out.number(secs_up(w.state.reset_after));
            if self.focus == Some(i) {
                focus = Some([remaining..end, reset..out.len()]);
            }
        }
        focus
    }

    /// The focus window's `X-RateLimit-Limit` value, as made at build time while the window
    /// keeps its burst.
    #[inline]
    fn push_limit(&self, out: &mut impl HeadOut, focus: &RuleWindow) {
        match self.text.get(focus.rule).and_then(|t| {
            Some((
                t.bursts.get(focus.window)?,
                t.burst_digits.get(focus.window)?,
            ))
        }) {
            Some((&burst, digits)) if burst == focus.state.limit => out.text(digits),
            _ => out.number(focus.state.limit),
        }
    }

    /// Appends every header [`write_headers`](Self::write_headers) gives as `Name: value\r\n`
    /// lines to `out`, formatted in place (no allocation when `out` has room): for servers that
    /// write the response head themselves.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock};
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 10)
    ///     .rule(Rule::new("api", "/*", [Quota::per_second(2)?], Scope::Client)?)
    ///     .build()?;
    /// let none: [(&str, &[u8]); 0] = [];
    /// let verdict = limiter.decide("GET", "/", "192.0.2.1".parse()?, none);
    /// let mut head = String::with_capacity(256);
    /// verdict.write_head(&mut head);
    /// let mut lines = String::new();
    /// verdict.write_headers(|n, v| lines.push_str(&format!("{n}: {v}\r\n")));
    /// assert_eq!(head, lines);
    /// assert!(head.starts_with("RateLimit-Policy: \"api.0\";q=2;w=1\r\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_head(&self, out: &mut String) {
        // Numbers through `push_u64`, not `fmt`, and each rule's policy made once: this runs on
        // every request.
        match self.fresh_rule() {
            Some((_, Some(steady))) => out.push_str(steady),
            Some((text, None)) => self.write_rule_head(out, text),
            None => self.write_rate_head(out),
        }
        self.write_refusal(out);
    }

    /// [`write_head`](Self::write_head) into bytes, the same text: for servers that assemble
    /// the response head as bytes. Each number is worked out once, and the focus window's
    /// remaining and reset copied from it, with no UTF-8 check.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock};
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 10)
    ///     .rule(Rule::new("api", "/*", [Quota::per_second(2)?], Scope::Client)?)
    ///     .build()?;
    /// let none: [(&str, &[u8]); 0] = [];
    /// let verdict = limiter.decide("GET", "/", "192.0.2.1".parse()?, none);
    /// let mut bytes = Vec::with_capacity(256);
    /// verdict.write_head_bytes(&mut bytes);
    /// let mut text = String::new();
    /// verdict.write_head(&mut text);
    /// assert_eq!(bytes, text.as_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_head_bytes(&self, out: &mut Vec<u8>) {
        match self.fresh_rule() {
            Some((_, Some(steady))) => out.extend_from_slice(steady.as_bytes()),
            Some((text, None)) => self.write_rule_head_bytes(out, text),
            None => self.write_rate_head(out),
        }
        self.write_refusal(out);
    }

    /// [`write_rule_head`](Self::write_rule_head) into bytes: the focus window's numbers kept
    /// as digits and copied again, not worked out twice.
    #[inline]
    fn write_rule_head_bytes(&self, out: &mut Vec<u8>, text: &RuleText) {
        /// `X-RateLimit-*` of the focus window from its digits (no copy of them kept).
        #[inline(always)]
        fn limit_lines(out: &mut Vec<u8>, lines: &str, remaining: &Digits, reset: &Digits) {
            out.extend_from_slice(lines.as_bytes());
            remaining.push(out);
            out.extend_from_slice(b"\r\nX-RateLimit-Reset: ");
            reset.push(out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(text.lead.as_bytes());
        let windows = self.windows.as_slice();
        let focus = self.focus.and_then(|f| {
            let w = windows.get(f)?;
            Some((f, w, text.limit_lines.get(w.window)?))
        });
        let last = windows.len().saturating_sub(1);
        for (i, w) in windows.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(text.item_leads.get(i).map_or(&b""[..], |l| l.as_bytes()));
            }
            let remaining = Digits::of(w.state.remaining);
            let reset = Digits::of(secs_up(w.state.reset_after));
            remaining.push(out);
            out.extend_from_slice(b";t=");
            reset.push(out);
            if i == last {
                match focus {
                    // The focus is the last window (the only one, in a one-window rule): its
                    // digits are at hand.
                    Some((f, _, lines)) if f == last => {
                        return limit_lines(out, lines, &remaining, &reset);
                    }
                    _ => {}
                }
            }
        }
        match focus {
            Some((_, w, lines)) => {
                let remaining = Digits::of(w.state.remaining);
                let reset = Digits::of(secs_up(w.state.reset_after));
                limit_lines(out, lines, &remaining, &reset);
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }

    /// The text of the rule whose windows are this verdict's, all in order and with the bursts
    /// the text was made with (invariant 2), and its whole steady head when every window says
    /// exactly the numbers that head was made with (one token given after idle: `burst − 1`
    /// left, reset one interval; the state of a client well within its limits). `None` for any
    /// other verdict. One pass over the windows.
    #[inline]
    fn fresh_rule(&self) -> Option<(&RuleText, Option<&str>)> {
        let windows = self.windows.as_slice();
        let first = windows.first()?;
        let text = self.text.get(first.rule)?;
        if text.bursts.len() != windows.len() {
            return None;
        }
        let mut steady = true;
        for (i, (w, &burst)) in windows.iter().zip(text.bursts.iter()).enumerate() {
            if w.rule != first.rule || w.window != i || w.state.limit != burst {
                return None;
            }
            steady &= w.state.remaining == burst.saturating_sub(1)
                && text.steady_resets.get(i) == Some(&secs_up(w.state.reset_after));
        }
        let steady = steady
            .then(|| text.steady.get(self.focus?))
            .flatten()
            .map(|s| &**s);
        Some((text, steady))
    }

    /// [`write_head`](Self::write_head)'s rate-limit lines for a verdict of one rule's windows
    /// as `text` was made for: its constant runs written whole, only the numbers in between.
    #[inline]
    fn write_rule_head(&self, out: &mut String, text: &RuleText) {
        out.push_str(&text.lead);
        let mut remaining_at = 0..0;
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                out.push_str(text.item_leads.get(i).map_or("", |l| l));
            }
            let remaining = out.len();
            push_u64(out, w.state.remaining);
            if self.focus == Some(i) {
                remaining_at = remaining..out.len();
            }
            out.push_str(";t=");
            push_u64(out, secs_up(w.state.reset_after));
        }
        let focus = self.focus.and_then(|i| self.windows.get(i));
        match focus.and_then(|f| Some((f, text.limit_lines.get(f.window)?))) {
            Some((focus, limit_lines)) => {
                out.push_str(limit_lines);
                // The focus window's remaining as `RateLimit` just wrote it (a long number:
                // copied), its reset in seconds (a digit or two: written again, cheaper).
                out.extend_from_within(remaining_at);
                out.push_str("\r\nX-RateLimit-Reset: ");
                push_u64(out, secs_up(focus.state.reset_after));
                out.push_str("\r\n");
            }
            None => out.push_str("\r\n"),
        }
    }

    /// [`write_head`](Self::write_head)'s rate-limit lines for any verdict.
    #[inline(never)]
    fn write_rate_head(&self, out: &mut impl HeadOut) {
        let mut numbers = None;
        if !self.windows.is_empty() {
            out.text("RateLimit-Policy: ");
            self.write_policy(out);
            out.text("\r\nRateLimit: ");
            numbers = self.write_state(out);
            out.text("\r\n");
        }
        if let Some(focus) = self.focus.and_then(|i| self.windows.get(i)) {
            out.text("X-RateLimit-Limit: ");
            self.push_limit(out, focus);
            // The focus window's remaining and reset, as `RateLimit` just wrote them.
            let [remaining, reset] = numbers.unwrap_or([0..0, 0..0]);
            out.text("\r\nX-RateLimit-Remaining: ");
            out.again(remaining);
            out.text("\r\nX-RateLimit-Reset: ");
            out.again(reset);
            out.text("\r\n");
        }
    }

    /// The refusal's lines of a head (`Retry-After`, `Content-Type`), if it refuses.
    #[inline]
    fn write_refusal(&self, out: &mut impl HeadOut) {
        if !self.is_allowed() {
            out.text("Retry-After: ");
            out.number(secs_up(self.retry_after).max(1));
            out.text("\r\nContent-Type: application/json\r\n");
        }
    }

    /// A window's label in the headers (`rule.index`, or as the rule names it).
    pub fn label(&self, window: &RuleWindow) -> &str {
        self.text
            .get(window.rule)
            .and_then(|t| t.labels.get(window.window))
            .map_or("", |l| l)
    }

    /// Where the rules' decisions came from: `"memory"`, `"redis"`, `"lease"` or `"fallback"`
    /// (Redis did not decide), the least authoritative when rules differ; `None` when no rule
    /// decided (a ban, or no rule matched). For access logs and metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::Quota;
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    ///
    /// let rule = Rule::new("all", "/", [Quota::per_second(5)?], Scope::Client)?;
    /// let limiter = HttpLimiter::builder().rule(rule).build()?;
    /// let peer = "192.0.2.1".parse()?;
    /// let verdict = limiter.decide("GET", "/", peer, std::iter::empty::<(&str, &[u8])>());
    /// assert_eq!(verdict.source(), Some("memory"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn source(&self) -> Option<&'static str> {
        self.source.map(|(_, name)| name)
    }

    /// The window the `X-RateLimit-*` headers describe: on a refusal, the refusing one.
    #[inline]
    pub fn focus(&self) -> Option<&RuleWindow> {
        self.focus.and_then(|i| self.windows.get(i))
    }

    /// The value `write_headers` gives header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found = None;
        self.write_headers(|n, v| {
            if found.is_none() && n.eq_ignore_ascii_case(name) {
                found = Some(v.to_owned());
            }
        });
        found
    }

    /// Every response header as owned pairs.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.write_headers(|n, v| out.push((n.to_owned(), v.to_owned())));
        out
    }

    /// The 429's JSON body (`None` when allowed).
    pub fn body(&self) -> Option<String> {
        if self.is_allowed() {
            return None;
        }
        let retry_ms = self.retry_after.as_millis();
        Some(match &self.refusal {
            Some(Refusal::Rule { rule, window }) => format!(
                "{{\"error\":\"too_many_requests\",\"rule\":\"{rule}\",\"window\":{window},\"retry_after_ms\":{retry_ms}}}"
            ),
            Some(Refusal::NewClient) => format!(
                "{{\"error\":\"too_many_requests\",\"reason\":\"new_client\",\"retry_after_ms\":{retry_ms}}}"
            ),
            Some(Refusal::Banned) => format!(
                "{{\"error\":\"too_many_requests\",\"reason\":\"banned\",\"retry_after_ms\":{retry_ms}}}"
            ),
            Some(Refusal::KeyCap { rule }) => format!(
                "{{\"error\":\"too_many_requests\",\"rule\":\"{rule}\",\"reason\":\"max_keys\",\"retry_after_ms\":{retry_ms}}}"
            ),
            None => return None,
        })
    }
}

/// One rule's counters (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    /// The rule's name.
    pub name: String,
    /// Requests the rule allowed.
    pub allowed: u64,
    /// Requests the rule refused (enforcing).
    pub refused: u64,
    /// Requests the rule would have refused in dry run.
    pub dry_run_refused: u64,
    /// Decisions per source: in-process, Redis, fallback (Redis did not decide), lease.
    pub by_source: [(&'static str, u64); 4],
}

/// Counters of the whole limiter (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Per rule.
    pub rules: Vec<RuleStats>,
    /// Clients put on the deny list.
    pub banned: u64,
    /// Requests refused because their client was on the deny list.
    pub denied: u64,
    /// New clients refused by the enumeration guard.
    pub new_client_refused: u64,
    /// Requests that touched a decoy path or key.
    pub decoys: u64,
}

impl HttpLimiter {
    /// A builder with no rules, the in-memory backend, no trusted proxy, the address as key.
    pub fn builder() -> HttpLimiterBuilder {
        HttpLimiterBuilder {
            rules: Vec::new(),
            trusted: Vec::new(),
            sources: Vec::new(),
            secret: None,
            backend: None,
            dry_run: false,
            guard: None,
            decoy_paths: Vec::new(),
            decoy_keys: Vec::new(),
            threshold: None,
            ban: Duration::from_secs(600),
        }
    }

    /// The rules, in decision order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// Rule `name`'s keyed limiter (to change its quota in place: `KeyedLimiter::set_quotas`
    /// keeps every client's state).
    ///
    /// The headers' constant text (each window's `q` and `w` in `RateLimit-Policy`) is made when
    /// this limiter is built. A burst changed in place is noticed and written afresh, but a
    /// changed rate with the same burst is not: `w` (burst × interval) then keeps its old
    /// value. To change a rule's rate with its headers, build a new `HttpLimiter` whose
    /// [`backend`](HttpLimiterBuilder::backend) hands this rule the same keyed limiter after
    /// `set_quotas` (as `tollgate serve`'s reload does): every client's state is kept and the
    /// text is made anew.
    pub fn limits(&self, name: &str) -> Option<&Arc<dyn KeyedLimits>> {
        self.rules
            .iter()
            .find(|c| c.rule.name == name)
            .map(|c| &c.limits)
    }

    /// The client of a request, as [`decide`](Self::decide) keys it.
    pub fn identify<'h, H>(&self, peer: IpAddr, headers: H) -> Identity
    where
        H: IntoIterator<Item = (&'h str, &'h [u8])>,
        H::IntoIter: Clone,
    {
        self.identity.identify(peer, headers.into_iter())
    }

    /// Decides one request: identity, deny list, decoys, enumeration guard, then every matching
    /// rule all or nothing (invariant 1). Takes header lines as (name, value) pairs, every line
    /// separately (repeated names are all read).
    pub fn decide<'h, H>(&self, method: &str, path: &str, peer: IpAddr, headers: H) -> Verdict<'_>
    where
        H: IntoIterator<Item = (&'h str, &'h [u8])>,
        H::IntoIter: Clone,
    {
        let identity = self.identity.identify(peer, headers.into_iter());
        self.decide_for(identity, method, path)
    }

    /// [`decide`](Self::decide) for a client already identified.
    #[inline]
    pub fn decide_for(&self, identity: Identity, method: &str, path: &str) -> Verdict<'_> {
        let mut verdict = self.undecided(identity);
        self.decide_in(&mut verdict, method, path);
        verdict
    }

    /// [`decide_for`](Self::decide_for), handing the verdict to `answer` where it was built,
    /// for a server that decides on every request: the verdict is never moved (a returned
    /// verdict is a few hundred bytes copied out of the call), and is dropped when `answer`
    /// returns. The verdict is the same as `decide_for`'s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tollgate::{Quota, time::ManualClock};
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    ///
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 100)
    ///     .rule(Rule::new("api", "/*", [Quota::per_second(1)?], Scope::Client)?)
    ///     .build()?;
    /// let none: [(&str, &[u8]); 0] = [];
    /// let peer: IpAddr = "192.0.2.1".parse()?;
    /// let mut head = Vec::new();
    /// let status = limiter.decide_with(limiter.identify(peer, none), "GET", "/", |verdict| {
    ///     verdict.write_head_bytes(&mut head);
    ///     verdict.status()
    /// });
    /// assert_eq!(status, 200);
    /// assert!(head.starts_with(b"RateLimit-Policy: "));
    /// let identity = limiter.identify(peer, none);
    /// assert_eq!(limiter.decide_with(identity, "GET", "/", |v| v.status()), 429);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn decide_with<R>(
        &self,
        identity: Identity,
        method: &str,
        path: &str,
        answer: impl FnOnce(&Verdict<'_>) -> R,
    ) -> R {
        let mut verdict = self.undecided(identity);
        self.decide_in(&mut verdict, method, path);
        answer(&verdict)
    }

    /// A verdict of `identity` that no rule has decided yet (allowed, no windows).
    #[inline]
    fn undecided(&self, identity: Identity) -> Verdict<'_> {
        Verdict {
            identity,
            refusal: None,
            dry_run: self.dry_run,
            text: &self.text,
            windows: Windows::default(),
            focus: None,
            retry_after: Duration::ZERO,
            source: None,
        }
    }

    /// Decides `verdict` (fresh from [`undecided`](Self::undecided)) in place.
    #[inline]
    fn decide_in(&self, verdict: &mut Verdict<'_>, method: &str, path: &str) {
        if self.abuse.is_some() || self.guard.is_some() {
            self.decide_guarded(verdict, method, path);
        } else {
            // No abuse state and no guard (the common configuration): the rules alone.
            self.decide_rules(verdict, method, path);
        }
    }

    /// [`decide_for`](Self::decide_for) with the abuse state or the enumeration guard.
    #[inline(never)]
    fn decide_guarded(&self, verdict: &mut Verdict<'_>, method: &str, path: &str) {
        // Only the abuse state is keyed by address alone.
        let addr_key = identity::ip_key(verdict.identity.addr());
        if let Some(abuse) = &self.abuse {
            if let Some(wait) = self.banned(abuse, &addr_key) {
                self.counts.denied.fetch_add(1, Ordering::Relaxed); // Relaxed: a counter only
                verdict.refusal = Some(Refusal::Banned);
                verdict.retry_after = wait;
                return;
            }
            let decoy = abuse.decoy_paths.iter().any(|p| p.matches(path))
                || verdict
                    .identity
                    .user()
                    .is_some_and(|u| abuse.decoy_keys.iter().any(|k| k == u));
            if decoy {
                self.counts.decoys.fetch_add(1, Ordering::Relaxed); // Relaxed: a counter only
                self.ban(abuse, &addr_key, "decoy");
                verdict.refusal = Some(Refusal::Banned);
                verdict.retry_after = abuse.ban;
                return;
            }
        }
        // The enumeration guard (invariant 4): known clients skip it untouched.
        let mut new_client = false;
        if let Some(guard) = &self.guard {
            new_client = guard.known.state_key(verdict.identity.key()).remaining > 0;
            if new_client {
                let d = guard.new_per_addr.decide(&addr_key, 1);
                if !d.is_allowed() {
                    self.counts.guard_refused.fetch_add(1, Ordering::Relaxed); // Relaxed: a counter only
                    verdict.refusal = Some(Refusal::NewClient);
                    verdict.retry_after = d
                        .tightest()
                        .map_or(Duration::from_secs(1), |(_, w)| w.retry_after);
                    self.refused(&addr_key);
                    if self.dry_run {
                        // Dry run never refuses: go on to the rules and report what they say.
                    } else {
                        return;
                    }
                }
            }
        }
        let guard_refused = verdict.refusal.is_some();
        self.decide_rules(verdict, method, path);
        if verdict.refusal.is_some() && !guard_refused {
            self.refused(&addr_key);
        } else if let (true, Some(guard)) = (new_client, &self.guard) {
            guard
                .known
                .penalize_key(verdict.identity.key(), guard.remember);
        }
    }

    /// Every matching rule, all or nothing (invariant 1).
    #[inline]
    fn decide_rules(&self, verdict: &mut Verdict<'_>, method: &str, path: &str) {
        if let [only] = &self.rules[..] {
            // One rule (`serve`'s default limit): it applies or nothing does, whether it is a
            // default rule or not.
            if only.rule.applies(method, path) {
                self.decide_one(verdict, (0, only), path);
            }
        } else {
            self.decide_matching(verdict, method, path);
        }
        if verdict.focus.is_none() {
            verdict.focus = match &verdict.windows {
                // One window (the common verdict): it is the focus, no search.
                Windows::One(_) => Some(0),
                windows => windows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| {
                        (w.state.remaining, std::cmp::Reverse(w.state.reset_after))
                    })
                    .map(|(i, _)| i),
            };
        }
    }

    /// [`decide_rules`](Self::decide_rules) over several rules: the matching ones, in order.
    #[inline]
    fn decide_matching(&self, verdict: &mut Verdict<'_>, method: &str, path: &str) {
        // Default rules apply only where no other rule does.
        let specific = self.has_default
            && self
                .rules
                .iter()
                .any(|c| !c.rule.default && c.rule.applies(method, path));
        let mut matching = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, c)| !(c.rule.default && specific) && c.rule.applies(method, path));
        if let Some(first) = matching.next() {
            match matching.next() {
                // One rule (the common request): nothing to undo, so no list of charges.
                None => self.decide_one(verdict, first, path),
                Some(second) => {
                    self.decide_many(verdict, [first, second].into_iter().chain(matching), path)
                }
            }
        }
    }

    /// The only matching rule: decided, counted and recorded at once.
    #[inline]
    fn decide_one(
        &self,
        verdict: &mut Verdict<'_>,
        (index, compiled): (usize, &Compiled),
        path: &str,
    ) {
        let answer = {
            let key = scoped_key(compiled, &verdict.identity, path);
            if compiled.rule.dry_run {
                FastDecision::Full(compiled.limits.decide(&key, 1))
            } else {
                compiled.limits.decide_fast(&key, 1)
            }
        };
        let decision = match answer {
            // The common answer (an in-process window allowed it): no `Decision` built.
            FastDecision::Allowed(state) => {
                crate::obs::limiter_decision(&compiled.rule.name, true);
                return self.record_allowed(verdict, index, state);
            }
            FastDecision::Full(decision) => decision,
        };
        let allowed = decision.is_allowed();
        crate::obs::limiter_decision(&compiled.rule.name, allowed);
        // A shadow rule (per-rule dry run) never refuses.
        let refusing = !allowed && !compiled.rule.dry_run;
        self.record(verdict, index, &decision, refusing, false);
    }

    /// Several matching rules, in order, all or nothing: a refusal undoes the charges before it.
    #[cold]
    #[inline(never)]
    fn decide_many<'r>(
        &'r self,
        verdict: &mut Verdict<'_>,
        matching: impl Iterator<Item = (usize, &'r Compiled)>,
        path: &str,
    ) {
        // Out of the verdict while the charges borrow its key (a placeholder allocates nothing).
        let identity = std::mem::replace(&mut verdict.identity, Identity::placeholder());
        self.decide_all(verdict, &identity, matching, path);
        verdict.identity = identity;
    }

    /// [`decide_many`](Self::decide_many) with the client apart from the verdict.
    #[inline]
    fn decide_all<'r>(
        &'r self,
        verdict: &mut Verdict<'_>,
        identity: &Identity,
        matching: impl Iterator<Item = (usize, &'r Compiled)>,
        path: &str,
    ) {
        let mut taken: Taken<'_> = Taken::default();
        let mut refused_at = None;
        for (index, compiled) in matching {
            let key = scoped_key(compiled, identity, path);
            let decision = compiled.limits.decide(&key, 1);
            let allowed = decision.is_allowed();
            crate::obs::limiter_decision(&compiled.rule.name, allowed);
            taken.push((index, key, decision));
            // A shadow rule (per-rule dry run) never refuses.
            if !allowed && !compiled.rule.dry_run {
                refused_at = Some(taken.len() - 1);
                break;
            }
        }
        if let Some(at) = refused_at {
            for (index, key, decision) in taken.iter().take(at) {
                if decision.is_allowed() {
                    self.rules[*index].limits.undo_key(key, decision);
                }
            }
        }
        for (i, (index, _, decision)) in taken.iter().enumerate() {
            let refusing = Some(i) == refused_at;
            self.record(
                verdict,
                *index,
                decision,
                refusing,
                refused_at.is_some() && !refusing,
            );
        }
    }

    /// Counts rule `index`'s decision and adds its windows to the verdict (a shadow rule's are
    /// not shown). `refusing`: this decision refuses the request (invariant 2); `undone`: it was
    /// allowed, and its charge given back because a later rule refused.
    #[inline]
    fn record(
        &self,
        verdict: &mut Verdict<'_>,
        index: usize,
        decision: &Decision,
        refusing: bool,
        undone: bool,
    ) {
        let compiled = &self.rules[index];
        // The common decision: an enforcing rule's one window allowed it, from memory.
        if !refusing
            && !undone
            && !compiled.rule.dry_run
            && decision.source == Source::Memory
            && let (Some(state), 1) = (decision.window(0), decision.len())
        {
            // Not refusing, enforcing: the decision allowed (see `decide_one`).
            return self.record_allowed(verdict, index, state);
        }
        let result = if compiled.rule.dry_run && !decision.is_allowed() {
            DRY_RUN_REFUSED
        } else if refusing {
            if self.dry_run {
                DRY_RUN_REFUSED
            } else {
                REFUSED
            }
        } else if undone {
            UNDONE
        } else {
            ALLOWED
        };
        compiled.counts.count(result, decision.source);
        let source = match decision.source {
            Source::Memory => (0, "memory"),
            Source::Redis => (1, "redis"),
            Source::Lease => (2, "lease"),
            Source::Fallback(_) => (3, "fallback"),
        };
        if verdict.source.is_none_or(|(rank, _)| rank < source.0) {
            verdict.source = Some(source);
        }
        if compiled.rule.dry_run {
            // Counted as enforcing would count it; no window in the headers.
            return;
        }
        let lengths = self.text.get(index).map_or(&[][..], |t| &t.lengths[..]);
        for (w, state) in decision.windows().enumerate() {
            verdict.windows.push(RuleWindow {
                rule: index,
                window: w,
                state,
                length: lengths.get(w).copied().unwrap_or(Duration::ZERO),
            });
        }
        if refusing {
            let refusing = decision.refused_by().unwrap_or(0);
            let focus = verdict.windows.len() - decision.len()
                + refusing.min(decision.len().saturating_sub(1));
            verdict.focus = (!decision.is_empty()).then_some(focus);
            verdict.retry_after = decision
                .window(refusing)
                .map_or(Duration::from_secs(1), |w| w.retry_after);
            if verdict.refusal.is_none() {
                verdict.refusal = Some(
                    if matches!(decision.result, Err(LimitError::TooManyKeys { .. })) {
                        Refusal::KeyCap {
                            rule: compiled.rule.name.clone(),
                        }
                    } else {
                        Refusal::Rule {
                            rule: compiled.rule.name.clone(),
                            window: refusing,
                        }
                    },
                );
            }
        }
    }

    /// [`record`](Self::record) of an enforcing rule whose one window allowed the request in
    /// memory (`state`): counted and recorded at once, with no iterator over windows.
    #[inline]
    fn record_allowed(&self, verdict: &mut Verdict<'_>, index: usize, state: WindowState) {
        let compiled = &self.rules[index];
        compiled.counts.count(ALLOWED, Source::Memory);
        if verdict.source.is_none() {
            verdict.source = Some((0, "memory"));
        }
        let length = self
            .text
            .get(index)
            .and_then(|t| t.lengths.first().copied())
            .unwrap_or(Duration::ZERO);
        let window = RuleWindow {
            rule: index,
            window: 0,
            state,
            length,
        };
        if let Windows::Empty = verdict.windows {
            // The verdict's first window (the common one): written in place, nothing to drop.
            verdict.windows = Windows::One(window);
        } else {
            verdict.windows.push(window);
        }
    }

    /// `Some(time left)` if `addr_key` is banned (invariant 6).
    fn banned(&self, abuse: &Abuse, addr_key: &str) -> Option<Duration> {
        let state = abuse.deny.state_key(addr_key);
        (state.remaining == 0).then_some(state.retry_after)
    }

    fn ban(&self, abuse: &Abuse, addr_key: &str, why: &str) {
        self.counts.banned.fetch_add(1, Ordering::Relaxed); // Relaxed: a counter only
        abuse.deny.penalize_key(addr_key, abuse.ban);
        tracing::warn!(
            client = addr_key,
            reason = why,
            ban_secs = abuse.ban.as_secs(),
            "client banned"
        );
    }

    /// Counts a refusal of `addr_key` against the threshold; bans past it.
    fn refused(&self, addr_key: &str) {
        if let Some(abuse) = &self.abuse
            && let Some(refusals) = &abuse.refusals
            && refusals.check_key(addr_key, 1).is_err()
        {
            self.ban(abuse, addr_key, "refusal threshold");
        }
    }

    /// Every counter.
    pub fn stats(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed); // Relaxed: counters only
        Stats {
            rules: self
                .rules
                .iter()
                .map(|c| RuleStats {
                    name: c.rule.name.clone(),
                    allowed: c.counts.result(ALLOWED),
                    refused: c.counts.result(REFUSED),
                    dry_run_refused: c.counts.result(DRY_RUN_REFUSED),
                    by_source: [
                        ("memory", c.counts.source(0)),
                        ("redis", c.counts.source(1)),
                        ("fallback", c.counts.source(2)),
                        ("lease", c.counts.source(3)),
                    ],
                })
                .collect(),
            banned: get(&self.counts.banned),
            denied: get(&self.counts.denied),
            new_client_refused: get(&self.counts.guard_refused),
            decoys: get(&self.counts.decoys),
        }
    }
}

/// How many windows (and matching rules) a verdict holds in place; more spill to the heap.
const INLINE_WINDOWS: usize = 2;

/// A verdict's windows: up to [`INLINE_WINDOWS`] in place, so the common request (one or two
/// matching windows) allocates nothing for them. A new verdict writes only the tag of `Empty`
/// (no slots to clear), and a window is written once, where it lands.
#[derive(Clone, Default)]
enum Windows {
    #[default]
    Empty,
    One(RuleWindow),
    Two([RuleWindow; INLINE_WINDOWS]),
    Heap(Vec<RuleWindow>),
}

impl Windows {
    #[inline]
    fn as_slice(&self) -> &[RuleWindow] {
        match self {
            Windows::Empty => &[],
            Windows::One(one) => std::slice::from_ref(one),
            Windows::Two(two) => two,
            Windows::Heap(heap) => heap,
        }
    }

    #[inline]
    fn push(&mut self, window: RuleWindow) {
        match self {
            Windows::Empty => *self = Windows::One(window),
            Windows::One(one) => *self = Windows::Two([*one, window]),
            Windows::Two(two) => {
                let mut heap = Vec::with_capacity(INLINE_WINDOWS * 2);
                heap.extend_from_slice(two);
                heap.push(window);
                *self = Windows::Heap(heap);
            }
            Windows::Heap(heap) => heap.push(window),
        }
    }
}

impl std::ops::Deref for Windows {
    type Target = [RuleWindow];

    #[inline]
    fn deref(&self) -> &[RuleWindow] {
        self.as_slice()
    }
}

impl fmt::Debug for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The rules a request charged, in order (rule index, key, decision): up to
/// [`INLINE_WINDOWS`] in place, the rest on the heap (invariant 1 undoes them on a refusal).
#[derive(Default)]
struct Taken<'k> {
    inline: [Option<(usize, Cow<'k, str>, Decision)>; INLINE_WINDOWS],
    spill: Vec<(usize, Cow<'k, str>, Decision)>,
    len: usize,
}

impl<'k> Taken<'k> {
    #[inline]
    fn push(&mut self, item: (usize, Cow<'k, str>, Decision)) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(item),
            None => self.spill.push(item),
        }
        self.len += 1;
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = &(usize, Cow<'k, str>, Decision)> {
        self.inline.iter().flatten().chain(&self.spill)
    }
}

/// The backend key of a rule's scope (invariant 5); borrowed where it is the client's key.
#[inline]
fn scoped_key<'a>(compiled: &Compiled, identity: &'a Identity, path: &str) -> Cow<'a, str> {
    match compiled.rule.scope {
        Scope::Client => Cow::Borrowed(identity.key()),
        Scope::ClientRoute => {
            let path = rule::without_query(path);
            Cow::Owned(format!("{}|{}", identity.key(), path))
        }
        Scope::UserIp => match identity.user() {
            Some(user) => Cow::Owned(format!("{}|{}", user, identity.addr())),
            None => Cow::Owned(identity::ip_key(identity.addr())),
        },
        Scope::Global => Cow::Borrowed("*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    /// The steady head (made at build time) is taken exactly when every window has given one
    /// token after idle, and says what the general path writes from the windows' states.
    #[test]
    fn steady_heads_equal_the_general_path() {
        let clock = ManualClock::new();
        let quotas = [
            Quota::per_second(5).unwrap(),
            Quota::per_minute(100).unwrap().burst(20).unwrap(),
        ];
        for windows in [&quotas[..1], &quotas[..]] {
            let limiter = HttpLimiter::builder()
                .memory(clock.clone(), 100)
                .rule(Rule::new("r", "/*", windows.iter().copied(), Scope::Client).unwrap())
                .build()
                .unwrap();
            let peer = IpAddr::from([192, 0, 2, 1]);
            let none: [(&str, &[u8]); 0] = [];
            // First request: steady. Second at the same instant: not. After a pause long
            // enough for every window to refill: steady again.
            for (advance, steady) in [(0, true), (0, false), (0, false), (60_000, true)] {
                clock.advance(Duration::from_millis(advance));
                let verdict = limiter.decide("GET", "/x", peer, none);
                let (_, head) = verdict.fresh_rule().expect("one rule, its bursts");
                assert_eq!(head.is_some(), steady, "{verdict:?}");
                let mut general = String::new();
                verdict.write_rate_head(&mut general);
                let mut head = String::new();
                verdict.write_head(&mut head);
                assert_eq!(head, general);
                let mut bytes = Vec::new();
                verdict.write_head_bytes(&mut bytes);
                assert_eq!(bytes, general.as_bytes());
            }
        }
    }

    #[test]
    fn digits_are_written_as_display_does() {
        let mut cases = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1_000,
            100_000_000,
            u64::MAX,
        ];
        let mut n = 1u64;
        while let Some(m) = n.checked_mul(10) {
            cases.extend([n - 1, n, n + 1, m - 1]);
            n = m;
        }
        for n in cases {
            let mut out = String::from("x");
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
            let mut bytes = b"x".to_vec();
            Digits::of(n).push(&mut bytes);
            assert_eq!(bytes, format!("x{n}").as_bytes());
        }
    }
}
