//! Who a request comes from: the key its limits are counted under.
//!
//! `X-Forwarded-For` is believed only when the connection comes from a trusted proxy, and then
//! only up to the first address (from the right) that is not itself a trusted proxy: a client
//! can prepend anything it likes to the header, but it cannot forge what our proxy appended.
//!
//! `--limit-by user` keys by the identity in `Authorization`: the user name of `Basic`
//! credentials, or a hash of a `Bearer` token (keyed by a per-process secret, so the limiter
//! never holds the token and a key cannot be turned back into it). The password or token is
//! not verified: authentication is the upstream's job; this only keys on the identity. A
//! request without usable credentials has no key (the server answers 401).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::OnceLock;

/// What the limits are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The client's IP address (`X-Forwarded-For` from trusted proxies only).
    Ip,
    /// A header (`--key-header`, default `X-API-Key`); requests without it fall back to the IP.
    Header,
    /// The user of `Authorization: Basic` (or a hash of a `Bearer` token); none: 401.
    User,
}

/// How to find the client of a request.
#[derive(Debug, Clone)]
pub struct ClientRule {
    /// What the limits are keyed by.
    pub limit_by: LimitBy,
    /// The header naming the client when keyed by header.
    pub key_header: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl ClientRule {
    /// The limiter key for a request from `peer` with `header(name)` lookups; `None` when keyed
    /// by user and the request has no usable credentials.
    pub fn key<'a>(
        &self,
        peer: Option<IpAddr>,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<String> {
        if self.limit_by == LimitBy::User {
            return header("Authorization").and_then(user_key);
        }
        if self.limit_by == LimitBy::Header
            && let Some(value) = header(&self.key_header)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        {
            return Some(format!("key:{value}"));
        }
        Some(match self.client_ip(peer, header("X-Forwarded-For")) {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_string(),
        })
    }

    /// The client's address: the peer, or the right-most untrusted `X-Forwarded-For` entry when
    /// the peer is a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let Some(forwarded) = forwarded else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in forwarded.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusted_proxies.contains(&ip) {
                        break;
                    }
                }
                // Garbage in the header: stop at the last address we could verify.
                Err(_) => break,
            }
        }
        Some(client)
    }
}

/// The key for an `Authorization` value: `user:NAME` for Basic, `token:HASH` for Bearer.
fn user_key(authorization: &str) -> Option<String> {
    let (scheme, credentials) = authorization.trim().split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(decode_base64(credentials)?).ok()?;
        let (user, _password) = decoded.split_once(':')?;
        (!user.is_empty()).then(|| format!("user:{user}"))
    } else if scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty() {
        // Two keyed 64-bit hashes: 128 bits, so distinct tokens do not share a budget.
        static SECRET: OnceLock<(RandomState, RandomState)> = OnceLock::new();
        let (a, b) = SECRET.get_or_init(|| (RandomState::new(), RandomState::new()));
        Some(format!(
            "token:{:016x}{:016x}",
            a.hash_one(credentials),
            b.hash_one(credentials)
        ))
    } else {
        None
    }
}

/// Standard base64 (RFC 4648, padding optional); `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    // A single leftover character (6 bits) cannot end valid base64.
    (count < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(trusted: &[&str]) -> ClientRule {
        ClientRule {
            limit_by: LimitBy::Ip,
            key_header: "X-API-Key".into(),
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer = Some("10.0.0.9".parse().unwrap());
        let xff = Some("1.1.1.1, 2.2.2.2");
        assert_eq!(rule(&[]).client_ip(peer, xff), peer);
        assert_eq!(
            rule(&["10.0.0.9"]).client_ip(peer, xff),
            Some("2.2.2.2".parse().unwrap())
        );
        assert_eq!(
            rule(&["10.0.0.9", "2.2.2.2"]).client_ip(peer, xff),
            Some("1.1.1.1".parse().unwrap())
        );
        assert_eq!(rule(&["10.0.0.9"]).client_ip(peer, Some("junk")), peer);
    }

    #[test]
    fn header_keys_fall_back_to_the_ip() {
        let mut r = rule(&[]);
        r.limit_by = LimitBy::Header;
        let peer = Some("127.0.0.1".parse().unwrap());
        assert_eq!(r.key(peer, |_| Some("abc")).unwrap(), "key:abc");
        assert_eq!(r.key(peer, |_| None).unwrap(), "ip:127.0.0.1");
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YWI").unwrap(), b"ab");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("Y").is_none());
        assert!(decode_base64("a*b=").is_none());
    }

    #[test]
    fn user_keys_come_from_basic_or_a_hashed_bearer_token() {
        let mut r = rule(&[]);
        r.limit_by = LimitBy::User;
        let peer = Some("127.0.0.1".parse().unwrap());
        let key = |auth: Option<&'static str>| r.key(peer, move |_| auth);
        assert_eq!(
            key(Some("Basic YWxpY2U6c2VjcmV0")).as_deref(),
            Some("user:alice")
        );
        assert_eq!(
            key(Some("basic YWxpY2U6b3RoZXI=")).as_deref(),
            Some("user:alice"),
            "the password is not checked"
        );
        let token = key(Some("Bearer s3cr3t-token")).unwrap();
        assert!(token.starts_with("token:") && !token.contains("s3cr3t"));
        assert_eq!(key(Some("Bearer s3cr3t-token")).unwrap(), token);
        assert_ne!(key(Some("Bearer other")).unwrap(), token);
        for bad in [
            None,
            Some("Basic !!"),
            Some("Basic Og=="),
            Some("Bearer "),
            Some("Digest x"),
        ] {
            assert_eq!(key(bad), None, "{bad:?}");
        }
    }
}
