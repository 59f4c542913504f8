#![cfg(not(loom))]
//! W3C `traceparent` from `HttpFetcher`: sent only when asked, one trace per fan-out run (or
//! the caller's, when one is entered), a fresh span id per request.

use std::collections::HashSet;

use tollgate::fanout::TraceContext;
use tollgate::{CancelToken, FanOut, HttpFetcher};
use tollgate_testkit::http::TestServer;

fn traceparents(server: &TestServer, key: &str) -> Vec<String> {
    server
        .headers_of(key)
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn a_run_sends_one_trace_with_a_span_per_request() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/ok/{key}"))
        .propagate_trace_context(true)
        .build()
        .unwrap();
    let keys = ["tp-a", "tp-b", "tp-c"];
    let fan_out = FanOut::builder(fetcher.clone())
        .max_in_flight(2)
        .build()
        .unwrap();
    fan_out.fetch_all(keys, &CancelToken::new()).unwrap();
    let sent: Vec<TraceContext> = keys
        .iter()
        .flat_map(|key| traceparents(&server, key))
        .map(|value| TraceContext::parse(&value).expect("a valid traceparent"))
        .collect();
    assert_eq!(sent.len(), 3);
    let traces: HashSet<String> = sent.iter().map(TraceContext::trace_id).collect();
    assert_eq!(traces.len(), 1, "one run, one trace: {sent:?}");
    let spans: HashSet<String> = sent.iter().map(TraceContext::span_id).collect();
    assert_eq!(spans.len(), 3, "a span id per request: {sent:?}");

    // Under the caller's context the run joins the caller's trace.
    let incoming =
        TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    {
        let _scope = incoming.enter();
        fan_out.fetch_all(["tp-d"], &CancelToken::new()).unwrap();
        // A direct fetch on this thread joins it too.
        fetcher.fetch("tp-e", &CancelToken::new()).unwrap();
    }
    for key in ["tp-d", "tp-e"] {
        let sent = traceparents(&server, key);
        assert_eq!(sent.len(), 1, "{key}");
        let context = TraceContext::parse(&sent[0]).unwrap();
        assert_eq!(context.trace_id(), incoming.trace_id(), "{key}");
        assert_ne!(context.span_id(), incoming.span_id(), "{key}");
    }
}

#[test]
fn nothing_is_sent_unless_asked() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/ok/{key}"))
        .build()
        .unwrap();
    let _scope = TraceContext::new_root().enter();
    fetcher.fetch("tp-off", &CancelToken::new()).unwrap();
    assert_eq!(server.hits("tp-off"), 1);
    assert!(traceparents(&server, "tp-off").is_empty());
}

#[test]
fn malformed_traceparents_are_refused() {
    for bad in [
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    ] {
        assert!(TraceContext::parse(bad).is_none(), "{bad:?}");
    }
    // A later version may append fields; the first four are read.
    assert!(
        TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
            .is_some()
    );
}
