//! Who a request comes from: the key its limits are counted under — configuration over the
//! library's identity extraction (`tollgate::http_limit`).
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

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use tollgate::http_limit::{HttpLimiter, KeySource};

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

/// How to find the client of a request.
#[derive(Debug, Clone)]
pub struct ClientRule {
    /// What the limits are keyed by.
    pub limit_by: LimitBy,
    identity: Arc<HttpLimiter>,
}

/// The per-process Bearer secret when none is configured: one per process (not per reload), so
/// a SIGHUP keeps every Bearer client's key.
fn process_secret() -> &'static [u8] {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    SECRET.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        (0u64..4)
            .flat_map(|i| RandomState::new().hash_one(i).to_le_bytes())
            .collect()
    })
}

impl ClientRule {
    /// The rule for these settings.
    pub fn new(
        limit_by: LimitBy,
        key_header: &str,
        trusted_proxies: &[IpAddr],
        bearer_secret: Option<&str>,
    ) -> Result<ClientRule, String> {
        let mut builder = HttpLimiter::builder().secret(match bearer_secret {
            Some(secret) if !secret.is_empty() => secret.as_bytes(),
            _ => process_secret(),
        });
        for proxy in trusted_proxies {
            builder = builder.trusted_proxy(proxy.to_string().parse().map_err(|e| format!("{e}"))?);
        }
        builder = match limit_by {
            LimitBy::Ip => builder,
            LimitBy::Header => builder.key_source(KeySource::Header(key_header.to_owned())),
            LimitBy::User => builder
                .key_source(KeySource::BasicUser)
                .key_source(KeySource::Bearer),
        };
        Ok(ClientRule {
            limit_by,
            identity: Arc::new(builder.build().map_err(|e| e.to_string())?),
        })
    }

    /// The limiter key for a request from `peer` with `headers` (every line, in order); `None`
    /// when keyed by user and the request has no usable credentials.
    pub fn key(&self, peer: Option<IpAddr>, headers: &[(String, String)]) -> Option<String> {
        let Some(peer) = peer else {
            return (self.limit_by != LimitBy::User).then(|| "ip:unknown".to_owned());
        };
        let lines = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        let identity = self.identity.identify(peer, lines);
        match (identity.user(), self.limit_by) {
            (None, LimitBy::User) => None,
            (None, _) => Some(identity.key().to_owned()),
            // The library's `h:` / `u:` / `b:` prefixes as serve has always named them.
            (Some(user), _) => Some(match user.split_at_checked(2) {
                Some(("h:", rest)) => format!("key:{rest}"),
                Some(("u:", rest)) => format!("user:{rest}"),
                Some(("b:", rest)) => format!("token:{rest}"),
                _ => user.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(by: LimitBy, trusted: &[&str]) -> ClientRule {
        let trusted: Vec<IpAddr> = trusted.iter().map(|s| s.parse().unwrap()).collect();
        ClientRule::new(by, "X-API-Key", &trusted, None).unwrap()
    }

    fn h(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_over_every_line() {
        let peer = Some("10.0.0.9".parse().unwrap());
        let xff = h(&[("X-Forwarded-For", "1.1.1.1, 2.2.2.2")]);
        let key = |trusted: &[&str], headers: &[(String, String)]| {
            rule(LimitBy::Ip, trusted).key(peer, headers).unwrap()
        };
        assert_eq!(key(&[], &xff), "ip:10.0.0.9");
        assert_eq!(key(&["10.0.0.9"], &xff), "ip:2.2.2.2");
        assert_eq!(key(&["10.0.0.9", "2.2.2.2"], &xff), "ip:1.1.1.1");
        assert_eq!(
            key(&["10.0.0.9"], &h(&[("X-Forwarded-For", "junk")])),
            "ip:10.0.0.9"
        );
        // The proxy's own line, appended after the client's (the bug of issue 12).
        let two = h(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "3.3.3.3"),
        ]);
        assert_eq!(key(&["10.0.0.9"], &two), "ip:3.3.3.3");
    }

    #[test]
    fn header_keys_fall_back_to_the_ip() {
        let r = rule(LimitBy::Header, &[]);
        let peer = Some("127.0.0.1".parse().unwrap());
        assert_eq!(r.key(peer, &h(&[("x-api-key", "abc")])).unwrap(), "key:abc");
        assert_eq!(r.key(peer, &[]).unwrap(), "ip:127.0.0.1");
    }

    #[test]
    fn user_keys_come_from_basic_or_an_hmac_of_a_bearer_token() {
        let r = rule(LimitBy::User, &[]);
        let peer = Some("127.0.0.1".parse().unwrap());
        let key = |auth: Option<&str>| {
            let headers = auth.map(|a| h(&[("Authorization", a)])).unwrap_or_default();
            r.key(peer, &headers)
        };
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
        // A reload (a new rule) keeps the per-process secret; a shared secret is the same in
        // every process.
        assert_eq!(
            rule(LimitBy::User, &[])
                .key(peer, &h(&[("Authorization", "Bearer s3cr3t-token")]))
                .unwrap(),
            token
        );
        let fleet = |secret| {
            ClientRule::new(LimitBy::User, "X-API-Key", &[], Some(secret))
                .unwrap()
                .key(peer, &h(&[("Authorization", "Bearer t")]))
                .unwrap()
        };
        assert_eq!(fleet("s"), fleet("s"));
        assert_ne!(fleet("s"), fleet("other"));
    }
}
