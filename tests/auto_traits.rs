//! Every public type is `Send`, `Sync`, `UnwindSafe` and `RefUnwindSafe` where it should be: a
//! primitive shared between threads, or kept across `catch_unwind` (a pool job's panic), must
//! stay so. Adding a `Cell`, an `Rc` or a raw callback field to one of them breaks this file's
//! build, not a user's.

use std::panic::{RefUnwindSafe, UnwindSafe};

use tollgate::cancel::*;
use tollgate::fanout::*;
#[cfg(feature = "http")]
use tollgate::http::*;
use tollgate::limit::*;
use tollgate::pool::*;
use tollgate::semaphore::*;
use tollgate::time::*;
use tollgate::{Error, ErrorKind};

fn shareable<T: Send + Sync + UnwindSafe + RefUnwindSafe>() {}
fn sendable<T: Send + UnwindSafe + RefUnwindSafe>() {}

type Key = String;
type Job = fn(&CancelToken) -> Result<u32, Error>;
type Lookup = fn(&u32, u32, &CancelToken) -> Result<String, Error>;

#[test]
fn primitives_are_shareable_across_threads_and_panics() {
    shareable::<CancelToken>();
    shareable::<Registration>();
    shareable::<DropGuard>();
    shareable::<Cause>();
    shareable::<Error>();
    shareable::<ErrorKind>();
    shareable::<MonotonicClock>();
    shareable::<StdClock>();
    shareable::<ManualClock>();
    shareable::<ClockSource>();
    shareable::<Wake>();
    shareable::<Quota>();
    shareable::<QuotaError>();
    shareable::<RateLimiter>();
    shareable::<RateLimiter<ManualClock>>();
    shareable::<MultiLimiter>();
    shareable::<KeyedLimiter<Key>>();
    shareable::<KeyedLimiter<u64, ManualClock>>();
    shareable::<LimitError>();
    shareable::<LimitState>();
    shareable::<Semaphore>();
    shareable::<OwnedPermit>();
    shareable::<Permit<'static>>();
    shareable::<AcquireError>();
    shareable::<TryAcquireError>();
    shareable::<ResizeError>();
    shareable::<ParseQuotaError>();
    shareable::<AllOf>();
    shareable::<AllOf<ManualClock>>();
    shareable::<Grant>();
    shareable::<Reservation<'static>>();
    shareable::<Reservation<'static, ManualClock>>();
    shareable::<WindowState>();
    shareable::<Decision>();
    shareable::<FastDecision>();
    shareable::<Source>();
    shareable::<BackendError>();
    shareable::<DefaultKeyHasher>();
    shareable::<Box<dyn KeyedLimits + UnwindSafe + RefUnwindSafe>>();
    // A trait object is exactly as unwind-safe as its implementor, which is the user's type:
    // the traits require `Send + Sync`, checked here, and compose with the unwind traits.
    shareable::<Box<dyn Limiter + UnwindSafe + RefUnwindSafe>>();
    shareable::<Box<dyn Clock + UnwindSafe + RefUnwindSafe>>();
    fn send_sync<T: ?Sized + Send + Sync>() {}
    send_sync::<dyn Limiter>();
    send_sync::<dyn Clock>();
    send_sync::<dyn KeyedLimits>();
}

#[test]
fn pools_groups_and_fan_outs_are_shareable() {
    shareable::<WorkerPool>();
    shareable::<WorkerPoolBuilder>();
    shareable::<PoolStats>();
    shareable::<PoolError>();
    shareable::<JobError>();
    shareable::<Shutdown>();
    shareable::<SubmitError<fn()>>();
    sendable::<JobHandle<u32>>();
    shareable::<Group<'static, u32>>();
    shareable::<TrySpawnError<Job>>();
    shareable::<Supervision>();
    shareable::<Stall>();
    shareable::<StallKind>();
    shareable::<Pulse>();
    shareable::<PulseKind>();
    shareable::<JobContext<'static>>();
    shareable::<FanOut<Lookup>>();
    shareable::<FanOutBuilder<Lookup>>();
    shareable::<FanOutError<u32, String>>();
    shareable::<FanOutStats>();
    shareable::<RetryPolicy>();
    shareable::<Replication>();
    shareable::<ConcurrencyFeedback>();
    shareable::<
        tollgate::fanout::ByReplica<
            fn(&u32, u32, usize, &CancelToken) -> Result<u32, tollgate::Error>,
        >,
    >();
    shareable::<Jitter>();
    shareable::<JitterRng>();
    shareable::<Progress>();
    shareable::<TraceContext>();
    // A scope restores its thread's previous context: it stays on that thread (not `Send`).
    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    unwind_safe::<TraceScope>();
    shareable::<RateFeedback>();
}

#[cfg(feature = "http")]
#[test]
fn the_http_fetcher_is_shareable() {
    shareable::<HttpFetcher>();
    shareable::<HttpFetcherBuilder>();
    shareable::<HttpResponse>();
    shareable::<HttpConfigError>();
    shareable::<RedirectPolicy>();
}

#[cfg(feature = "quanta")]
#[test]
fn the_counter_clock_is_shareable() {
    shareable::<TscClock>();
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_limiter_is_shareable() {
    use tollgate::redis::{
        Algorithm, BreakerConfig, BreakerState, BreakerStats, Fallback, LatencyStats, MemoryGuard,
        NewKeys, RedisLimiter, RedisLimiterBuilder, RedisStats, SlowCalls,
    };
    shareable::<Algorithm>();
    shareable::<RedisLimiter>();
    shareable::<RedisLimiterBuilder>();
    shareable::<MemoryGuard>();
    shareable::<NewKeys>();
    shareable::<SlowCalls>();
    shareable::<Fallback>();
    shareable::<BreakerConfig>();
    shareable::<BreakerState>();
    shareable::<BreakerStats>();
    shareable::<RedisStats>();
    shareable::<LatencyStats>();
}

#[test]
fn the_http_limiter_is_shareable() {
    use tollgate::http_limit::{
        BackendFn, BuildError, HttpLimiter, HttpLimiterBuilder, Identity, IpNet, KeySource,
        ParseIpNetError, PathPattern, Refusal, Rule, RuleError, RuleStats, RuleWindow, Scope,
        Stats, Verdict,
    };
    shareable::<HttpLimiter>();
    shareable::<HttpLimiterBuilder>();
    shareable::<BuildError>();
    fn send_sync<T: ?Sized + Send + Sync>() {}
    send_sync::<BackendFn>();
    shareable::<Identity>();
    shareable::<IpNet>();
    shareable::<KeySource>();
    shareable::<ParseIpNetError>();
    shareable::<PathPattern>();
    shareable::<Rule>();
    shareable::<RuleError>();
    shareable::<Scope>();
    shareable::<Refusal>();
    shareable::<RuleWindow>();
    shareable::<Verdict<'static>>();
    shareable::<RuleStats>();
    shareable::<Stats>();
}
