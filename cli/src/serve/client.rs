//! Who a request comes from: the key its limits are counted under — configuration of the
//! library's identity extraction (`tollgate::http_limit`; wired in `limits.rs`).
//!
//! `X-Forwarded-For` (and `Forwarded`) is believed only when the connection comes from a trusted
//! proxy; every line of the header counts, in order, and the client is the right-most hop that is
//! not itself a trusted proxy: a client can prepend anything it likes, but it cannot forge what
//! our proxy appended (on the same line or on a line of its own, as HAProxy's `option
//! forwardfor` does).
//!
//! `--limit-by user` keys by the identity in `Authorization`: the user name of `Basic`
//! credentials, or an HMAC of a `Bearer` token under `--bearer-secret` (every instance given the
//! same secret keys a token alike, so a fleet shares its budget; without one, a random
//! per-process secret). The limiter never holds the token. The password or token is not
//! verified: authentication is the upstream's job; this only keys on the identity. A request
//! without usable credentials has no key (the server answers 401).

/// What the limits are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The client's IP address (`X-Forwarded-For` from trusted proxies only).
    Ip,
    /// A header (`--key-header`, default `X-API-Key`); requests without it fall back to the IP.
    Header,
    /// The user of `Authorization: Basic` (or an HMAC of a `Bearer` token); none: 401.
    User,
}
