//! The `http` crate adapter (feature `http-types`): one call per request for servers built on
//! `http::Request` / `http::Response`.

use std::net::IpAddr;

use super::{HttpLimiter, Verdict};

impl HttpLimiter {
    /// [`decide`](Self::decide) for an `http::Request`: its method, path (with query), every
    /// header line and the peer address the server accepted the connection from.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    /// use tollgate::{Quota, time::ManualClock};
    ///
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 100)
    ///     .rule(Rule::new("all", "/*", [Quota::per_hour(1)?], Scope::Client)?)
    ///     .build()?;
    /// let request = http::Request::get("/x").body(())?;
    /// let peer = "192.0.2.1".parse()?;
    /// assert!(limiter.decide_http(&request, peer).is_allowed());
    /// let refused = limiter.decide_http(&request, peer);
    /// let response = refused.to_http_response();
    /// assert_eq!(response.status(), 429);
    /// assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide_http<B>(&self, request: &http::Request<B>, peer: IpAddr) -> Verdict<'_> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        // `http`'s header iterator is not `Clone`; the identity needs several passes.
        let headers: Vec<(&str, &[u8])> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        self.decide(request.method().as_str(), path, peer, headers)
    }
}

impl Verdict<'_> {
    /// Adds this verdict's headers to `headers` (for an allowed request's response).
    pub fn apply_to_http(&self, headers: &mut http::HeaderMap) {
        self.write_headers(|name, value| {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        });
    }

    /// The whole 429 response (headers and JSON body); for an allowed verdict, an empty 200 with
    /// the rate-limit headers.
    pub fn to_http_response(&self) -> http::Response<String> {
        let mut response = http::Response::new(self.body().unwrap_or_default());
        *response.status_mut() =
            http::StatusCode::from_u16(self.status()).unwrap_or(http::StatusCode::OK);
        self.apply_to_http(response.headers_mut());
        response
    }
}
