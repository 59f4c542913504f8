//! What tollgate tells a `tracing` subscriber: error records an id finds, the fan-out's spans and
//! attempt events, the spans of waits that block — captured by a subscriber of our own.
//!
//! The fan-out's runners log from pool threads, so the capturing subscriber is the process-wide
//! default, installed once; tests running side by side in this binary pick their own records
//! out by error id or by key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tollgate::fanout::RetryPolicy;
use tollgate::{CancelToken, Error, ErrorKind, FanOut, Quota, RateLimiter, Semaphore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

mod support;
use support::pool::occupy_worker_until;

/// One captured event: level, target, fields, and the enclosing spans (outermost first) with
/// their fields.
#[derive(Debug, Clone)]
struct Captured {
    level: tracing::Level,
    target: String,
    fields: HashMap<String, String>,
    spans: Vec<(String, HashMap<String, String>)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn span(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.spans.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let mut fields = span
            .extensions()
            .get::<Fields>()
            .map(|f| f.0.clone())
            .unwrap_or_default();
        fields.insert("name".to_owned(), span.name().to_owned());
        let spans = span
            .scope()
            .skip(1)
            .map(|s| (s.name().to_owned(), HashMap::new()))
            .collect();
        self.0.lock().unwrap().push(Captured {
            level: *span.metadata().level(),
            target: "span-close".to_owned(),
            fields,
            spans,
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
            spans,
        });
    }
}

/// The process-wide capture (everything down to DEBUG).
fn captured() -> Arc<Mutex<Vec<Captured>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<Captured>>>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let store = Arc::new(Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::registry()
                .with(Capture(store.clone()))
                .with(tracing_subscriber::filter::LevelFilter::DEBUG);
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            store
        })
        .clone()
}

/// The error records (target `tollgate::error`) whose `field` is `value`. Other events may name
/// an error id too (an attempt's, a run's summary): they point at the record, they are not one.
fn records_with(field: &str, value: &str) -> Vec<Captured> {
    captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.target == "tollgate::error" && c.field(field) == Some(value))
        .cloned()
        .collect()
}

/// The id shown to the user finds exactly one record, holding the error's time and fingerprint.
#[test]
fn the_id_in_a_user_message_finds_exactly_one_record() {
    let _ = captured();
    let fetch = |key: &u32, _: u32, _: &CancelToken| match key {
        1013 => Err(Error::new(ErrorKind::Status(404), "no such user")),
        _ => Ok(*key),
    };
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(2)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let failure = fan_out
        .fetch_all(1001..=1020, &CancelToken::new())
        .unwrap_err();
    let error = &failure.error;
    let message = error.user_message();
    assert!(message.contains(error.id()), "{message}");
    assert!(!error.is_bug(), "a 404 is an edge case");
    assert!(message.contains("retrying will not help"), "{message}");

    let records = records_with("error.id", error.id());
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record.target, "tollgate::error");
    assert_eq!(record.level, tracing::Level::WARN);
    assert_eq!(record.field("error.time"), Some(error.timestamp().as_str()));
    assert_eq!(
        record.field("error.fingerprint"),
        Some(error.fingerprint().as_str())
    );
    assert_eq!(record.field("error.kind"), Some("HTTP status 404"));
    assert_eq!(record.field("error.key"), Some("1013"));
    assert_eq!(record.field("error.message"), Some("no such user"));
    assert_eq!(record.field("error.bug"), Some("false"));
    // Recording again (as an application might at its own boundary) adds nothing.
    assert!(!error.record());
    assert_eq!(records_with("error.id", error.id()).len(), 1);
}

/// A panic in a fetch is a bug: backtrace always, "please report it", an ERROR record.
#[test]
fn a_panic_in_a_fetch_is_a_bug_and_a_404_an_edge_case() {
    let _ = captured();
    let fetch = |key: &u32, _: u32, _: &CancelToken| -> Result<u32, Error> {
        if *key == 2007 {
            panic!("index out of bounds in the user's parser");
        }
        Ok(*key)
    };
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(1)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let failure = fan_out
        .fetch_all(2001..=2010, &CancelToken::new())
        .unwrap_err();
    let error = &failure.error;
    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert!(error.is_bug());
    assert_eq!(
        error.backtrace().status(),
        std::backtrace::BacktraceStatus::Captured,
        "a bug carries a backtrace whatever RUST_BACKTRACE says"
    );
    let message = error.user_message();
    assert!(
        message.contains("something unexpected happened"),
        "{message}"
    );
    assert!(message.contains("please report it"), "{message}");
    assert!(message.contains(error.id()), "{message}");

    let records = records_with("error.id", error.id());
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].level, tracing::Level::ERROR);
    assert_eq!(records[0].field("error.bug"), Some("true"));
    assert_eq!(
        records[0].field("error.fingerprint"),
        Some(error.fingerprint().as_str())
    );

    // The edge case beside it: kind, advice, level.
    let not_found = Error::new(ErrorKind::Status(404), "gone");
    assert!(!not_found.is_bug());
    assert!(!not_found.user_message().contains("please report"));
}

/// Errors with a source record the chain; a cancellation is recorded at DEBUG, not as a failure.
#[test]
fn records_hold_the_source_chain_and_cancels_stay_quiet() {
    let _ = captured();
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
    let error = Error::new(ErrorKind::Connection, "could not read the reply")
        .with_key("k-chain")
        .with_source(io);
    assert!(error.record());
    let records = records_with("error.id", error.id());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].field("error.source"), Some("reset by peer"));

    let cancelled = Error::from(tollgate::cancel::Cause::Cancelled);
    cancelled.record();
    let records = records_with("error.id", cancelled.id());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].level, tracing::Level::DEBUG);
}

/// The run's span, per-attempt events with key, attempt, outcome, status, latency and error id,
/// and the run's summary event.
#[test]
fn a_fan_out_run_has_its_span_and_attempt_events() {
    let _ = captured();
    // Key 3001: a 503, then success; 3002: success; 3003: a 404 (fail-fast off, so it is one of
    // the run's failures).
    let fetch = |key: &u32, attempt: u32, _: &CancelToken| match (key, attempt) {
        (3001, 1) => Err(Error::new(ErrorKind::Status(503), "busy")),
        (3003, _) => Err(Error::new(ErrorKind::Status(404), "no such user")),
        _ => Ok(*key),
    };
    let retry = RetryPolicy::new(3)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .unwrap();
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(1)
        .retry(retry)
        .fail_fast(false)
        .build()
        .unwrap();
    let failure = fan_out
        .fetch_all(3001..=3003, &CancelToken::new())
        .unwrap_err();
    assert_eq!(failure.failures.len(), 1);

    let all = captured().lock().unwrap().clone();
    let attempts: Vec<&Captured> = all
        .iter()
        .filter(|c| {
            c.field("message") == Some("attempt ended")
                && c.span("tollgate.attempt")
                    .and_then(|s| s.get("key"))
                    .is_some_and(|k| k.starts_with("300"))
        })
        .collect();
    let find = |key: &str, attempt: &str| {
        attempts
            .iter()
            .find(|c| {
                let span = c.span("tollgate.attempt").unwrap();
                span.get("key").map(String::as_str) == Some(key)
                    && span.get("attempt").map(String::as_str) == Some(attempt)
            })
            .unwrap_or_else(|| panic!("no attempt {attempt} of {key}: {attempts:#?}"))
    };
    let first = find("3001", "1");
    assert_eq!(first.field("outcome"), Some("error"));
    assert_eq!(first.field("status"), Some("HTTP status 503"));
    assert!(first.field("latency_us").is_some());
    assert_eq!(first.field("error.id").map(str::len), Some(8));
    assert!(
        first.span("tollgate.fanout").is_some(),
        "the attempt is inside the run's span: {first:#?}"
    );
    assert_eq!(find("3001", "2").field("outcome"), Some("ok"));
    assert_eq!(find("3002", "1").field("outcome"), Some("ok"));
    let not_found = find("3003", "1");
    assert_eq!(not_found.field("outcome"), Some("error"));
    assert_eq!(
        not_found.field("error.id"),
        Some(failure.error.id()),
        "the attempt event names the id the user sees"
    );
    assert_eq!(attempts.len(), 4, "{attempts:#?}");

    // The summary event names the run's error id.
    let summaries: Vec<&Captured> = all
        .iter()
        .filter(|c| c.field("error.id") == Some(failure.error.id()))
        .filter(|c| {
            c.field("message")
                .is_some_and(|m| m.starts_with("fan-out stopped"))
        })
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert_eq!(summaries[0].field("retries"), Some("1"));
}

/// The `tollgate.wait` spans closed inside the span named `probe`, with their fields.
fn waits_inside(probe: &str) -> Vec<HashMap<String, String>> {
    captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.target == "span-close" && c.field("name") == Some("tollgate.wait"))
        .filter(|c| c.spans.iter().any(|(name, _)| name == probe))
        .map(|c| c.fields.clone())
        .collect()
}

/// A wait that blocks gets a `tollgate.wait` span with how long it waited; the fast paths
/// (`check`, `try_acquire`, a wait whose slot is due) get none.
#[test]
fn waits_that_block_have_a_span_and_fast_paths_none() {
    let _ = captured();
    let limiter = RateLimiter::new(Quota::per_second(100).unwrap().burst(1).unwrap());
    let token = CancelToken::new();
    let semaphore = Semaphore::new(1);
    tracing::debug_span!("probe.fast").in_scope(|| {
        limiter.wait(&token).unwrap(); // the burst's one token: due now, no block
        let _ = limiter.check();
        drop(semaphore.try_acquire(1).unwrap());
        drop(semaphore.acquire(1, &token).unwrap()); // free: the fast path
    });
    assert!(waits_inside("probe.fast").is_empty());

    tracing::debug_span!("probe.limiter").in_scope(|| {
        limiter.wait(&token).unwrap(); // ~10 ms away: blocks
    });
    let waits = waits_inside("probe.limiter");
    assert_eq!(waits.len(), 1, "{waits:#?}");
    assert_eq!(waits[0].get("what").map(String::as_str), Some("limiter"));
    assert!(waits[0].contains_key("waited_us"));

    let held = semaphore.try_acquire(1).unwrap();
    tracing::debug_span!("probe.semaphore").in_scope(|| {
        assert!(
            semaphore
                .acquire(1, &CancelToken::with_timeout(Duration::from_millis(5)))
                .is_err()
        );
    });
    drop(held);
    let waits = waits_inside("probe.semaphore");
    assert_eq!(waits.len(), 1, "{waits:#?}");
    assert_eq!(waits[0].get("what").map(String::as_str), Some("semaphore"));

    // One worker busy until `gate` is cancelled, one job queued: the next submit blocks.
    let pool = tollgate::WorkerPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let gate = CancelToken::new();
    // The worker holds the first job: the queue slot is free.
    let running = occupy_worker_until(&pool, &gate);
    let queued = pool.submit(|| (), CancelToken::never()).unwrap();
    tracing::debug_span!("probe.pool").in_scope(|| {
        let hurry = CancelToken::with_timeout(Duration::from_millis(5));
        assert!(pool.submit(|| (), &hurry).is_err());
    });
    gate.cancel();
    running.join(CancelToken::never()).unwrap();
    queued.join(CancelToken::never()).unwrap();
    let waits = waits_inside("probe.pool");
    assert_eq!(waits.len(), 1, "{waits:#?}");
    assert_eq!(
        waits[0].get("what").map(String::as_str),
        Some("pool_submit")
    );
}

/// A group's error (the one `wait` returns) is recorded once too.
#[test]
fn a_group_error_finds_one_record() {
    let _ = captured();
    let pool = tollgate::WorkerPool::new(2).unwrap();
    let group = pool.group(&CancelToken::new());
    group
        .spawn(|_| -> Result<u32, Error> { Err(Error::new(ErrorKind::Status(500), "upstream")) })
        .unwrap();
    let error = group.wait().unwrap_err();
    assert_eq!(records_with("error.id", error.id()).len(), 1);
}

/// A Redis-backed decision has its span: who decided, the verdict, the breaker's state.
#[cfg(feature = "redis")]
#[test]
fn a_redis_decision_has_its_span() {
    let _ = captured();
    let redis = tollgate::redis::RedisLimiter::builder(
        "redis://127.0.0.1:1/",
        Quota::per_second(10).unwrap(),
    )
    .build()
    .unwrap();
    tracing::debug_span!("probe.redis").in_scope(|| {
        assert!(redis.decide("k", 1).is_allowed());
    });
    let spans: Vec<HashMap<String, String>> = captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.target == "span-close" && c.field("name") == Some("tollgate.redis"))
        .filter(|c| c.spans.iter().any(|(name, _)| name == "probe.redis"))
        .map(|c| c.fields.clone())
        .collect();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].get("source").map(String::as_str), Some("fallback"));
    assert_eq!(spans[0].get("allowed").map(String::as_str), Some("true"));
    assert_eq!(spans[0].get("breaker").map(String::as_str), Some("Closed"));
    assert!(
        spans[0].contains_key("latency_us"),
        "the refused call was timed"
    );
}
