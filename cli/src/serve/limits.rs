//! Per-client limits: a per-second window (rate and burst) and an optional per-minute window,
//! each a `KeyedLimiter` keyed by client.
//!
//! Invariants:
//! 1. A request is allowed only if every window allows it. The windows are checked in order
//!    (second, then minute); a request the minute window refuses has still spent its per-second
//!    token (the windows are separate limiters, so this is not all-or-nothing).
//! 2. The key cap (`max_keys`) is the keyed limiter's: a new client while every tracked client is
//!    busy is refused (429, policy `max-keys`), never admitted by forgetting a busy one.
//! 3. Enumeration floods: with `new_clients`, a request from a client whose per-second window is
//!    full (a new client, or one idle long enough to be indistinguishable from new) first takes
//!    a token from one global limiter, so millions of fresh keys are throttled as a group. Only
//!    the server's clock is used; nothing the client sends says how old it is.

use std::time::Duration;

use tollgate::{KeyedLimiter, LimitError, Quota, RateLimiter};

use super::metrics::Policy;

/// One window's state after a decision, for the rate-limit headers.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The policy's name.
    pub policy: Policy,
    /// Requests the window allows at once (its quota).
    pub quota: u64,
    /// The window's length in seconds.
    pub window_secs: u64,
    /// Requests that would pass now.
    pub remaining: u64,
    /// Until the window is full again.
    pub reset: Duration,
}

/// What the limits said about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `None` when allowed; the policy that refused otherwise.
    pub refused_by: Option<Policy>,
    /// How long until the same request would pass (zero when allowed).
    pub retry_after: Duration,
    /// Every window's state after the decision.
    pub windows: Vec<Window>,
}

/// The configured limits.
#[derive(Debug)]
pub struct Limits {
    per_second: KeyedLimiter<String>,
    per_second_window: u64,
    per_minute: Option<(KeyedLimiter<String>, u64)>,
    max_keys: usize,
    new_clients: Option<RateLimiter>,
    /// What it was built from, to keep it across reloads.
    params: Params,
}

/// What limits are built from: rate, burst, per-minute, max keys, new clients per second.
pub type Params = (u64, u64, Option<u64>, usize, Option<u64>);

impl Limits {
    /// Limits of `rate`/s with bursts of `burst`, and optionally `per_minute`/min, for at most
    /// `max_keys` clients.
    pub fn new(params: Params) -> Result<Limits, String> {
        let (rate, burst, per_minute, max_keys, new_clients) = params;
        let new_clients = new_clients
            .map(|n| {
                Quota::per_second(n)
                    .map(RateLimiter::new)
                    .map_err(|e| format!("--new-clients-per-second {n}: {e}"))
            })
            .transpose()?;
        let quota = Quota::per_second(rate)
            .and_then(|q| q.burst(burst))
            .map_err(|e| format!("--rate {rate} --burst {burst}: {e}"))?;
        let per_second = KeyedLimiter::new(quota, max_keys)
            .map_err(|e| format!("--max-keys {max_keys}: {e}"))?;
        let per_minute = per_minute
            .map(|n| {
                let quota = Quota::per_minute(n).map_err(|e| format!("--per-minute {n}: {e}"))?;
                KeyedLimiter::new(quota, max_keys)
                    .map(|l| (l, n))
                    .map_err(|e| format!("--max-keys {max_keys}: {e}"))
            })
            .transpose()?;
        Ok(Limits {
            per_second,
            per_second_window: burst.div_ceil(rate).max(1),
            per_minute,
            max_keys,
            new_clients,
            params,
        })
    }

    /// Whether these limits were built from these settings.
    pub fn built_from(&self, params: Params) -> bool {
        self.params == params
    }

    /// Decides one request from `client` (invariant 1).
    pub fn decide(&self, client: &String) -> Decision {
        // Invariant 3.
        let mut refused = match &self.new_clients {
            Some(global) => {
                let state = self.per_second.state(client);
                if state.remaining == state.burst {
                    match global.check() {
                        Ok(()) => None,
                        Err(LimitError::NotUntil { retry_after, .. }) => {
                            Some((Policy::NewClients, retry_after))
                        }
                        Err(_) => Some((Policy::NewClients, Duration::from_secs(1))),
                    }
                } else {
                    None
                }
            }
            None => None,
        };
        if refused.is_none() {
            refused = check(&self.per_second, client, Policy::PerSecond);
        }
        if refused.is_none()
            && let Some((minute, _)) = &self.per_minute
        {
            refused = check(minute, client, Policy::PerMinute);
        }
        let (refused_by, retry_after) = match refused {
            Some((policy, wait)) => (Some(policy), wait),
            None => (None, Duration::ZERO),
        };
        let mut windows = vec![window(
            &self.per_second,
            client,
            Policy::PerSecond,
            self.per_second_window,
        )];
        if let Some((minute, _)) = &self.per_minute {
            windows.push(window(minute, client, Policy::PerMinute, 60));
        }
        Decision {
            refused_by,
            retry_after,
            windows,
        }
    }

    /// Clients tracked now (the larger of the windows' key counts).
    pub fn keys_tracked(&self) -> usize {
        let minute = self.per_minute.as_ref().map_or(0, |(l, _)| l.len());
        self.per_second.len().max(minute)
    }

    /// Idle clients the windows' sweeps have removed so far (summed over the windows).
    pub fn evictions(&self) -> u64 {
        let minute = self.per_minute.as_ref().map_or(0, |(l, _)| l.evictions());
        self.per_second.evictions() + minute
    }

    /// The key cap.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

fn check(
    limiter: &KeyedLimiter<String>,
    client: &String,
    policy: Policy,
) -> Option<(Policy, Duration)> {
    match limiter.check(client) {
        Ok(()) => None,
        Err(LimitError::NotUntil { retry_after, .. }) => Some((policy, retry_after)),
        // Invariant 2: every tracked client is busy; one of them frees a place within a second
        // or so at any sane rate.
        Err(LimitError::TooManyKeys { .. }) => Some((Policy::Keys, Duration::from_secs(1))),
        Err(_) => Some((policy, Duration::from_secs(1))),
    }
}

fn window(limiter: &KeyedLimiter<String>, client: &String, policy: Policy, secs: u64) -> Window {
    let state = limiter.state(client);
    Window {
        policy,
        quota: state.burst,
        window_secs: secs,
        remaining: state.remaining,
        reset: state.reset_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_retry_after() {
        let limits = Limits::new((1, 2, None, 10, None)).unwrap();
        let a = "a".to_string();
        assert!(limits.decide(&a).refused_by.is_none());
        let second = limits.decide(&a);
        assert!(second.refused_by.is_none());
        assert_eq!(second.windows[0].remaining, 0);
        let third = limits.decide(&a);
        assert_eq!(third.refused_by, Some(Policy::PerSecond));
        assert!(third.retry_after > Duration::ZERO);
        assert!(limits.decide(&"b".to_string()).refused_by.is_none());
    }

    #[test]
    fn the_minute_window_refuses_too() {
        let limits = Limits::new((100, 100, Some(2), 10, None)).unwrap();
        let a = "a".to_string();
        limits.decide(&a);
        limits.decide(&a);
        assert_eq!(limits.decide(&a).refused_by, Some(Policy::PerMinute));
    }

    #[test]
    fn new_clients_share_one_budget_but_known_ones_do_not_pay_it() {
        let limits = Limits::new((10, 10, None, 1_000, Some(2))).unwrap();
        let a = "a".to_string();
        assert!(limits.decide(&a).refused_by.is_none());
        assert!(limits.decide(&"b".to_string()).refused_by.is_none());
        assert_eq!(
            limits.decide(&"c".to_string()).refused_by,
            Some(Policy::NewClients)
        );
        // `a` is known (its window is not full): it does not need the new-client budget.
        assert!(limits.decide(&a).refused_by.is_none());
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Limits::new((0, 1, None, 10, None)).is_err());
        assert!(Limits::new((1, 1, None, 0, None)).is_err());
    }
}
