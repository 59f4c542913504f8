//! The CLI's logs: one `tracing` subscriber on stderr (stdout stays data), its level from
//! `-v`/`-vv`/`-vvv`/`-q` or `RUST_LOG`, its format text or JSON (one object per line).
//!
//! | flags | shown |
//! |---|---|
//! | `-q` | nothing |
//! | (none) | bugs (`ERROR`), the Redis breaker's changes, `serve`'s access log |
//! | `-v` | + every error record (`WARN`) and each fan-out's summary (`INFO`) |
//! | `-vv` | + attempts, blocking waits, Redis calls (`DEBUG`) |
//! | `-vvv` | everything (`TRACE`) |
//!
//! `RUST_LOG` (tracing-subscriber's `EnvFilter` syntax), when set, replaces the table.
//! The library installs no subscriber; only this binary does.
//!
//! Invariant: logging never holds up the thread that logs. Lines go to stderr through one
//! writer thread (tracing-appender's non-blocking writer) with a bounded queue of
//! [`QUEUE_LINES`]; when stderr is slower than the logs (a pipe nobody drains, a stalled
//! terminal), lines past the queue are dropped and counted ([`dropped`], and `serve`'s
//! `/metrics`), never waited for: `serve`'s event loops write an access line per request. The
//! writer thread writes what it finds queued in one go: stderr sits behind a [`WRITE_BUFFER`]
//! buffer that the thread flushes each time it has emptied the queue, so a line is never held
//! back once the loggers go quiet, and a busy server's lines cost one `write` per batch instead
//! of one per line (measured: `serve` answers ~10 % more requests per second with the default
//! access log, docs/benchmarks.md). The guard [`init`] returns flushes the queue when `main`
//! ends. When nothing can pass the filter (`-q`, `RUST_LOG=off`) there is no subscriber and no
//! writer thread at all.
//!
//! `serve`'s access lines (target `tollgate::access`) are formatted by [`access`]'s own layer,
//! byte for byte what tracing-subscriber's `fmt` layer writes for them at a sixth of its cost
//! (docs/benchmarks.md, session 9); every other event goes through the `fmt` layer. Both write
//! through the same non-blocking writer, one queued message per line.

use std::sync::OnceLock;
use std::time::SystemTime;

use clap::ValueEnum;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub mod access;

/// Log lines queued for stderr at most (about 300 bytes each for an access line): beyond it
/// lines are dropped, not waited for.
pub const QUEUE_LINES: usize = 16_384;

/// The buffer between the writer thread and stderr (flushed whenever the queue is empty).
pub const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because stderr did not keep up.
pub fn dropped() -> usize {
    DROPPED.get().map_or(0, ErrorCounter::dropped_lines)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields at the top level (for log shippers).
    Json,
}

/// The filter for `verbose` `-v`s, or none at all with `quiet`.
fn directives(verbose: u8, quiet: bool) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "off",
        (false, 0) => "error,tollgate::access=info,tollgate::redis=info",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    }
}

/// Installs the process's subscriber. `RUST_LOG` wins over the flags when set and valid; an
/// invalid `RUST_LOG` is reported and the flags' filter used. Keep the guard until the process
/// ends: dropping it writes out the lines still queued. `None` when the filter lets nothing
/// through: then no subscriber is installed and no writer thread started.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(verbose: u8, quiet: bool, format: LogFormat) -> Option<WorkerGuard> {
    init_with(std::env::var("RUST_LOG").ok(), verbose, quiet, format)
}

/// [`init`] with `RUST_LOG`'s value given.
fn init_with(
    rust_log: Option<String>,
    verbose: u8,
    quiet: bool,
    format: LogFormat,
) -> Option<WorkerGuard> {
    let fallback = directives(verbose, quiet);
    let filter = match rust_log {
        Some(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG ({e})");
            EnvFilter::new(fallback)
        }),
        _ => EnvFilter::new(fallback),
    };
    if filter.max_level_hint() == Some(LevelFilter::OFF) {
        return None;
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stderr(),
        ));
    let _ = DROPPED.set(writer.error_counter());
    let installed = match format {
        LogFormat::Text => subscriber(
            filter,
            access::Style::Text {
                ansi: crate::term::color(),
            },
            writer,
            SystemTime::now,
        )
        .try_init(),
        LogFormat::Json => {
            subscriber(filter, access::Style::Json, writer, SystemTime::now).try_init()
        }
    };
    if let Err(e) = installed {
        eprintln!("warning: cannot install the logger: {e}");
    }
    Some(guard)
}

/// The subscriber: `filter` over every event; the access log's events through the
/// [`access::AccessLayer`] in `style`, every other event through tracing-subscriber's `fmt`
/// layer in the same style, both to `writer` (the access layer stamping its lines by `clock`).
fn subscriber<W>(
    filter: EnvFilter,
    style: access::Style,
    writer: W,
    clock: access::Clock,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    // One of the two `fmt` layers is built: the other is `None`, a layer that does nothing.
    let (text, json) = match style {
        access::Style::Text { ansi } => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer.clone())
                    .with_ansi(ansi),
            ),
            None,
        ),
        access::Style::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer.clone())
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(access::WithAccess::new(
            tracing_subscriber::Layer::and_then(text, json),
            access::AccessLayer::new(style, writer, clock),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_vs_show_more_and_quiet_wins() {
        assert_eq!(directives(0, true), "off");
        assert_eq!(directives(3, true), "off");
        assert!(directives(0, false).starts_with("error"));
        assert_eq!(directives(1, false), "info");
        assert_eq!(directives(2, false), "debug");
        assert_eq!(directives(9, false), "trace");
        for v in 0..4 {
            assert!(EnvFilter::try_new(directives(v, false)).is_ok());
        }
    }

    /// A writer that keeps each `write` apart.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let line = String::from_utf8(buf.to_vec()).unwrap();
            self.0.lock().unwrap().push(line);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Capture {
        type Writer = Capture;

        fn make_writer(&self) -> Capture {
            self.clone()
        }
    }

    /// The installed subscriber's shape: the filter decides whether an access event exists at
    /// all; when it does, it is written once (by the access layer: the `fmt` layer leaves it);
    /// every other event is written once by the `fmt` layer.
    #[test]
    fn each_event_is_written_once_as_the_filter_says() {
        let clock = || std::time::UNIX_EPOCH;
        let styles = [
            access::Style::Text { ansi: false },
            access::Style::Text { ansi: true },
            access::Style::Json,
        ];
        for style in styles {
            for (directives, access_shown, warn_shown) in [
                (directives(0, false), true, false),
                (directives(1, false), true, true),
                ("warn", false, true),
                ("tollgate::access=info", true, false),
                ("tollgate::access=warn,info", false, true),
            ] {
                let out = Capture::default();
                let filter = EnvFilter::new(directives);
                tracing::subscriber::with_default(
                    subscriber(filter, style, out.clone(), clock),
                    || {
                        tracing::info!(target: "tollgate::access", status = 200_u16, "access");
                        tracing::warn!(target: "tollgate::fanout", n = 1_u64, "a warning");
                        tracing::error!(target: "tollgate::access", "an error of the target");
                    },
                );
                let lines = out.0.lock().unwrap().clone();
                let access = lines.iter().filter(|l| l.contains("status")).count();
                let warn = lines.iter().filter(|l| l.contains("a warning")).count();
                let error = lines.iter().filter(|l| l.contains("an error")).count();
                let what = format!("{style:?} {directives}: {lines:?}");
                assert_eq!(access, usize::from(access_shown), "{what}");
                assert_eq!(warn, usize::from(warn_shown), "{what}");
                assert_eq!(error, 1, "{what}");
                assert_eq!(lines.len(), access + warn + error, "{what}");
                assert!(lines.iter().all(|l| l.ends_with('\n')), "{what}");
                if access_shown {
                    assert!(lines[0].contains("1970-01-01T00:00:00.000000Z"), "{what}");
                }
            }
        }
    }

    /// Threads this test thread has started and not yet ended: tasks of the process other than
    /// this one named as it is (std names a new thread from inside it, so until then it carries
    /// its parent's name) or as the log writer.
    #[cfg(target_os = "linux")]
    fn threads_started_here() -> usize {
        // The link reads `PID/task/TID`, relative to /proc.
        let me =
            std::path::Path::new("/proc").join(std::fs::read_link("/proc/thread-self").unwrap());
        let my_name = std::fs::read_to_string(me.join("comm")).unwrap();
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|task| task.unwrap().path())
            .filter(|task| task.file_name() != me.file_name())
            .filter_map(|task| std::fs::read_to_string(task.join("comm")).ok())
            .filter(|name| *name == my_name || name.trim() == "tollgate-log")
            .count()
    }

    /// `-q` (and a `RUST_LOG` that lets nothing through) starts no writer thread and installs
    /// no subscriber; `RUST_LOG` still wins over `-q`. The only test that calls `init*`; it runs
    /// on a thread named for it, so no other test's thread can be counted.
    #[cfg(target_os = "linux")]
    #[test]
    fn quiet_starts_no_writer_thread() {
        std::thread::Builder::new()
            .name("quiet-probe".into())
            .spawn(|| {
                assert_eq!(threads_started_here(), 0);
                assert!(init_with(None, 0, true, LogFormat::Text).is_none());
                assert!(init_with(Some("off".into()), 2, false, LogFormat::Json).is_none());
                assert_eq!(threads_started_here(), 0, "a writer thread for -q");
                let guard = init_with(Some("warn".into()), 0, true, LogFormat::Text);
                assert!(guard.is_some(), "RUST_LOG wins over -q");
                assert_eq!(threads_started_here(), 1, "the writer thread");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
