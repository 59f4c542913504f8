//! Who a request comes from: the key its limits are counted under.
//!
//! `X-Forwarded-For` is believed only when the connection comes from a trusted proxy, and then
//! only up to the first address (from the right) that is not itself a trusted proxy: a client
//! can prepend anything it likes to the header, but it cannot forge what our proxy appended.

use std::net::IpAddr;

/// What the limits are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The client's IP address (`X-Forwarded-For` from trusted proxies only).
    Ip,
    /// A header (`--key-header`, default `X-API-Key`); requests without it fall back to the IP.
    Header,
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
    /// The limiter key for a request from `peer` with `header(name)` lookups.
    pub fn key<'a>(
        &self,
        peer: Option<IpAddr>,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> String {
        if self.limit_by == LimitBy::Header
            && let Some(value) = header(&self.key_header)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        {
            return format!("key:{value}");
        }
        match self.client_ip(peer, header("X-Forwarded-For")) {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_string(),
        }
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
        assert_eq!(r.key(peer, |_| Some("abc")), "key:abc");
        assert_eq!(r.key(peer, |_| None), "ip:127.0.0.1");
    }
}
