//! Wiring tollgate's spans into OpenTelemetry in an application: `tracing-opentelemetry` as a
//! layer of the application's own subscriber, the SDK's simple span processor and the stdout
//! exporter — no async runtime anywhere (an OTLP exporter would replace the stdout one; its
//! transports run on tokio, which is why the `tollgate` CLI does not ship one, see
//! `docs/observability.md`).
//!
//! `cargo run -p tollgate-otel-example` prints the spans of one fan-out run as OpenTelemetry
//! exports them: the run (`tollgate.fanout`), each attempt, with their trace and parent ids, and
//! then checks that every attempt span is a child of the run's span in one trace.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tollgate::pool::Shutdown;
use tollgate::{CancelToken, FanOut, WorkerPool};
use tracing_subscriber::layer::SubscriberExt;

/// Prints each span through the stdout exporter and keeps its ids for the check at the end.
#[derive(Debug)]
struct PrintAndKeep {
    stdout: opentelemetry_stdout::SpanExporter,
    kept: Arc<Mutex<Vec<SpanData>>>,
}

impl SpanExporter for PrintAndKeep {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.kept.lock().unwrap().extend(batch.iter().cloned());
        self.stdout.export(batch).await
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(PrintAndKeep {
            stdout: opentelemetry_stdout::SpanExporter::default(),
            kept: kept.clone(),
        })
        .build();
    let tracer = provider.tracer("tollgate-otel-example");
    // Global, not thread-scoped: the fan-out's runners enter the run's span on pool threads.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with(tracing_opentelemetry::layer().with_tracer(tracer)),
    )?;

    let pool = Arc::new(WorkerPool::builder().threads(4).build()?);
    let fan_out = FanOut::builder(|key: &u32, _attempt: u32, _: &CancelToken| Ok(key * 2))
        .pool(pool.clone())
        .max_in_flight(4)
        .build()?;
    let doubled = fan_out.fetch_all(0..8_u32, CancelToken::never())?;
    assert_eq!(doubled.len(), 8);
    // The run's span closes (and is exported) when its last handle goes: the runners hold one
    // until they leave the pool's threads, just after the run returns. Stopping the pool joins
    // them; then flush the exporter.
    pool.shutdown(Shutdown::Drain);
    provider.shutdown()?;

    // Every attempt is a child of the run, in the run's trace.
    let spans = kept.lock().unwrap();
    let run = spans
        .iter()
        .find(|s| s.name == "tollgate.fanout")
        .ok_or("no run span exported")?;
    let attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.parent_span_id == run.span_context.span_id())
        .collect();
    let traces: HashSet<_> = attempts.iter().map(|s| s.span_context.trace_id()).collect();
    assert!(!attempts.is_empty(), "no span under the run: {spans:#?}");
    assert_eq!(traces, HashSet::from([run.span_context.trace_id()]));
    eprintln!(
        "exported {} spans: the run and {} children in trace {}",
        spans.len(),
        attempts.len(),
        run.span_context.trace_id()
    );
    Ok(())
}
