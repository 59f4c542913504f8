//! Name resolution without a thread per request.
//!
//! ureq resolves the host of every request, before it looks in its connection pool, and with a
//! resolve timeout set its `DefaultResolver` does so on a new thread each time, even for an IP
//! literal. [`CachingResolver`] answers IP literals directly and remembers host names for a
//! while, so a fetch over a pooled connection spawns nothing.
//!
//! Invariants:
//!
//! 1. An IP-literal host never reaches the inner resolver (and never a thread).
//! 2. A cached answer is at most `ttl` old; failures are never cached; with `ttl` zero nothing is.
//! 3. The cache holds at most `MAX_ENTRIES` hosts: when full it is emptied (a fan-out talks to a
//!    handful of hosts; this only bounds memory against a template with a host per key, which
//!    `{key}` cannot produce anyway).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::sync::Mutex;

const MAX_ENTRIES: usize = 256;

/// ureq's resolver behind an IP-literal shortcut and a small time-bounded cache.
#[derive(Debug)]
pub(crate) struct CachingResolver {
    inner: DefaultResolver,
    ttl: Duration,
    /// `host:port` → (when resolved, addresses).
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl CachingResolver {
    pub(crate) fn new(ttl: Duration) -> Self {
        CachingResolver {
            inner: DefaultResolver::default(),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// The port of `uri`, or its scheme's default.
fn port_of(uri: &Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    })
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(host), Some(port)) = (uri.host(), port_of(uri)) else {
            return self.inner.resolve(uri, config, timeout);
        };
        // Invariant 1. `Uri::host` keeps the brackets of an IPv6 literal.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        if self.ttl.is_zero() {
            return self.inner.resolve(uri, config, timeout);
        }
        let key = format!("{host}:{port}");
        if let Some((at, addrs)) = self.cache.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(addrs.clone());
        }
        // Resolve without the lock: a slow lookup must not hold up other hosts.
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &CachingResolver, url: &str) -> Vec<SocketAddr> {
        let uri = Uri::try_from(url).unwrap();
        let config = Config::default();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(5),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        r.resolve(&uri, &config, timeout)
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn ip_literals_directly() {
        let r = CachingResolver::new(Duration::from_secs(30));
        assert_eq!(
            resolve(&r, "http://127.0.0.1:8080/x"),
            ["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(resolve(&r, "http://[::1]/x"), ["[::1]:80".parse().unwrap()]);
        assert!(r.cache.lock().is_empty());
    }

    #[test]
    fn host_names_are_cached() {
        let r = CachingResolver::new(Duration::from_secs(30));
        let first = resolve(&r, "http://localhost:9/x");
        assert!(!first.is_empty());
        assert_eq!(r.cache.lock().len(), 1);
        assert_eq!(resolve(&r, "http://localhost:9/y"), first);
        let uncached = CachingResolver::new(Duration::ZERO);
        assert!(!resolve(&uncached, "http://localhost:9/x").is_empty());
        assert!(uncached.cache.lock().is_empty());
    }
}
