//! Who a request comes from: the peer address, the client address a trusted proxy reports, a
//! named header, the Basic user, or a Bearer token's keyed digest.
//!
//! Invariants:
//!
//! 1. Forwarding headers (`X-Forwarded-For`, `Forwarded`) are read only when the peer is a
//!    trusted proxy. Every line of the header counts, in order, as one comma-separated list (RFC
//!    9110 §5.3), and the client is the right-most hop that is not itself a trusted proxy: hops
//!    to its left were written by the client and prove nothing. A hop that does not parse stops
//!    the walk at the last trusted hop seen (the proxy that appended garbage is not believed
//!    further), so garbage never becomes an identity.
//! 2. A Bearer token is never stored or printed: its key is an HMAC-SHA1 of the token under the
//!    configured secret (hex, 40 bytes), equal in every process that shares the secret.
//! 3. Every key this module builds is bounded: header values and Basic users longer than
//!    [`MAX_ID_BYTES`] are replaced by their keyed digest, so no client chooses how many bytes
//!    its key takes.
//! 4. Each thread keeps the key buffer of the last address-keyed identity it dropped, tagged with
//!    that address, and only such a buffer: its text is always exactly `ip:<that address>`, so
//!    the next identity of the same address takes it as it is, and one of another address
//!    rewrites it. One buffer of at most [`SPARE_BYTES`] per thread; nothing is shared between
//!    threads.

use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;

/// Identity values longer than this are stored as their digest (invariant 3).
pub const MAX_ID_BYTES: usize = 256;

/// One trusted proxy range: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
///
/// # Examples
///
/// ```
/// use tollgate::http_limit::IpNet;
/// let net: IpNet = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.1.2.3".parse()?));
/// assert!(!net.contains("11.0.0.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this range (an IPv4-mapped IPv6 address counts as its IPv4 form).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A trusted proxy range that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIpNetError(String);

impl fmt::Display for ParseIpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP address or CIDR range (10.0.0.0/8, ::1)",
            self.0
        )
    }
}

impl std::error::Error for ParseIpNetError {}

impl std::str::FromStr for IpNet {
    type Err = ParseIpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIpNetError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| err())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// `ip:<address>`: IPv4 written by hand (the per-request path; `fmt` costs several times more),
/// IPv6 through `Display`.
pub(crate) fn ip_key(ip: IpAddr) -> String {
    let mut key = String::with_capacity(18);
    write_ip_key(&mut key, ip);
    key
}

/// Appends `ip:<address>` to `key` (see [`ip_key`]).
fn write_ip_key(key: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            key.push_str("ip:");
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                if octet >= 100 {
                    key.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    key.push(char::from(b'0' + octet / 10 % 10));
                }
                key.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            use fmt::Write as _;
            let _ = write!(key, "ip:{ip}");
        }
    }
}

/// Longest key buffer kept for reuse (an `ip:` key of any address fits).
const SPARE_BYTES: usize = 64;

thread_local! {
    /// The key buffer of the last address-keyed [`Identity`] this thread dropped, with its
    /// address (invariant 4): the next one reuses it instead of allocating, and keeps its text
    /// when the address is the same (a keep-alive client's next request).
    static SPARE: Cell<Option<(IpAddr, String)>> = const { Cell::new(None) };
}

/// An IPv4-mapped IPv6 address as IPv4; any other address as it is.
#[inline]
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where the client's key comes from, tried in the order configured; the first present wins,
/// and the client address is always the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A named header's value (an API key header such as `X-Api-Key`).
    Header(String),
    /// The user of `Authorization: Basic`.
    BasicUser,
    /// The token of `Authorization: Bearer`, as its keyed digest (invariant 2).
    Bearer,
}

/// A request's client as the limiter keys it.
///
/// # Examples
///
/// ```
/// use tollgate::http_limit::Identity;
/// let id = Identity::ip("192.0.2.1".parse()?);
/// assert_eq!(id.key(), "ip:192.0.2.1");
/// assert_eq!(id.user(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    ip: IpAddr,
    /// Whether `key` is a user-level key (else the client is its address).
    user: bool,
    key: String,
}

impl Identity {
    /// A client known by its address alone.
    #[inline]
    pub fn ip(ip: IpAddr) -> Identity {
        let ip = canonical(ip);
        // The spare buffer holds `ip_key(last)` exactly (invariant 4).
        let key = match SPARE.try_with(Cell::take).ok().flatten() {
            Some((last, key)) if last == ip => key,
            Some((_, mut key)) => {
                key.clear();
                write_ip_key(&mut key, ip);
                key
            }
            None => ip_key(ip),
        };
        Identity {
            ip,
            user: false,
            key,
        }
    }

    /// A stand-in while an identity is borrowed apart from its verdict: allocates nothing and
    /// never becomes the spare buffer (not address-keyed).
    pub(crate) fn placeholder() -> Identity {
        Identity {
            ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            user: true,
            key: String::new(),
        }
    }

    fn with_user(ip: IpAddr, user: String) -> Identity {
        Identity {
            ip: canonical(ip),
            key: user,
            user: true,
        }
    }

    /// The client's address (the right-most untrusted hop behind trusted proxies).
    #[inline]
    pub fn addr(&self) -> IpAddr {
        self.ip
    }

    /// The key of a user-level source (`h:…`, `u:…`, `b:…`), if one identified the client.
    #[inline]
    pub fn user(&self) -> Option<&str> {
        self.user.then_some(self.key.as_str())
    }

    /// The client's key: the user-level key if any, else `ip:<address>`.
    #[inline]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Identity {
    /// An address-keyed identity leaves its key buffer to the thread's next one (invariant 4).
    #[inline]
    fn drop(&mut self) {
        if !self.user && self.key.capacity() <= SPARE_BYTES {
            let spare = Some((self.ip, std::mem::take(&mut self.key)));
            // During the thread's teardown the buffer is simply freed.
            let _ = SPARE.try_with(|cell| cell.set(spare));
        }
    }
}

/// How identities are extracted. Built by [`HttpLimiterBuilder`](super::HttpLimiterBuilder).
#[derive(Clone)]
pub(crate) struct IdentityConfig {
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) sources: Vec<KeySource>,
    /// The HMAC key (already hashed to one SHA-1 block if longer).
    pub(crate) secret: Vec<u8>,
}

impl fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("trusted", &self.trusted)
            .field("sources", &self.sources)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl IdentityConfig {
    #[inline]
    fn trusted(&self, ip: IpAddr) -> bool {
        // No trusted proxy (the common configuration): decided inline.
        !self.trusted.is_empty() && self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client of a request from `peer` with `headers` (invariant 1 to 3).
    pub(crate) fn identify<'h>(
        &self,
        peer: IpAddr,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Identity {
        let ip = self.client_addr(peer, headers.clone());
        for source in &self.sources {
            let found = match source {
                KeySource::Header(name) => headers
                    .clone()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| trim(v))
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("h:{}", self.bounded(v))),
                KeySource::BasicUser => authorization(headers.clone(), "basic")
                    .and_then(basic_user)
                    .filter(|u| !u.is_empty())
                    .map(|u| format!("u:{}", self.bounded(u.as_bytes()))),
                KeySource::Bearer => authorization(headers.clone(), "bearer")
                    .filter(|t| !t.is_empty())
                    .map(|t| format!("b:{}", hex(&self.hmac(t)))),
            };
            if let Some(user) = found {
                return Identity::with_user(ip, user);
            }
        }
        Identity::ip(ip)
    }

    /// The right-most untrusted hop (invariant 1).
    fn client_addr<'h>(
        &self,
        peer: IpAddr,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted(peer) {
            return peer;
        }
        // `Forwarded` (RFC 7239) wins over `X-Forwarded-For` when a proxy sends it.
        for (name, parse) in [
            ("forwarded", forwarded_for as fn(&str) -> Option<IpAddr>),
            ("x-forwarded-for", parse_hop),
        ] {
            let mut lines = headers
                .clone()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .peekable();
            if lines.peek().is_none() {
                continue;
            }
            // Lines are read last to first, and each line's hops right to left: one list in
            // order (invariant 1), without collecting it.
            let lines: Vec<&[u8]> = lines.map(|(_, v)| v).collect();
            let mut client = peer;
            'walk: for value in lines.iter().rev() {
                let value = std::str::from_utf8(value).unwrap_or("\u{0}");
                for hop in value.rsplit(',') {
                    match parse(hop) {
                        Some(ip) => {
                            client = ip;
                            if !self.trusted(ip) {
                                break 'walk;
                            }
                        }
                        None => break 'walk, // garbage: stop at the last trusted hop
                    }
                }
            }
            return client;
        }
        peer
    }

    /// `value` itself if short, else its keyed digest (invariant 3).
    fn bounded(&self, value: &[u8]) -> String {
        match std::str::from_utf8(value) {
            Ok(s) if s.len() <= MAX_ID_BYTES && !s.contains(['|', '\0']) => s.to_owned(),
            _ => format!("#{}", hex(&self.hmac(value))),
        }
    }

    /// HMAC-SHA1(secret, data) (RFC 2104).
    pub(crate) fn hmac(&self, data: &[u8]) -> [u8; 20] {
        let mut key = [0u8; 64];
        key[..self.secret.len()].copy_from_slice(&self.secret);
        let mut inner = sha1_smol::Sha1::new();
        inner.update(&key.map(|b| b ^ 0x36));
        inner.update(data);
        let mut outer = sha1_smol::Sha1::new();
        outer.update(&key.map(|b| b ^ 0x5c));
        outer.update(&inner.digest().bytes());
        outer.digest().bytes()
    }
}

/// The HMAC key for a secret: itself up to one block, else its SHA-1 (RFC 2104).
pub(crate) fn hmac_key(secret: &[u8]) -> Vec<u8> {
    if secret.len() > 64 {
        sha1_smol::Sha1::from(secret).digest().bytes().to_vec()
    } else {
        secret.to_vec()
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The credentials of the first `Authorization: <scheme> …` header.
fn authorization<'h>(
    mut headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    scheme: &str,
) -> Option<&'h [u8]> {
    let (_, value) = headers.find(|(n, _)| n.eq_ignore_ascii_case("authorization"))?;
    let value = trim(value);
    let split = value.iter().position(|b| *b == b' ')?;
    let (given, rest) = value.split_at(split);
    given
        .eq_ignore_ascii_case(scheme.as_bytes())
        .then(|| trim(rest))
}

/// The user of Basic credentials (`base64(user:password)`).
fn basic_user(credentials: &[u8]) -> Option<String> {
    let decoded = base64_decode(credentials)?;
    let user = match decoded.iter().position(|b| *b == b':') {
        Some(colon) => &decoded[..colon],
        None => &decoded[..],
    };
    String::from_utf8(user.to_vec()).ok()
}

/// Standard base64 (padding optional); `None` on any other byte.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if input.len() % 4 == 1 || input.len() > 4 * MAX_ID_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// One `X-Forwarded-For` hop: an address, optionally `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr.parse::<IpAddr>().ok().map(canonical);
    }
    let (addr, port) = hop.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.1;proto=https`, `for="[::1]:80"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_are_written_as_display_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_key(ip), format!("ip:{ip}"));
        }
    }

    /// The thread's spare key buffer (invariant 4): every identity's key is its own address's,
    /// whatever address the buffer last held, and user-level keys never become the spare.
    #[test]
    fn a_reused_key_buffer_always_names_its_own_address() {
        let addrs: Vec<IpAddr> = [
            "192.0.2.1",
            "192.0.2.1",
            "10.0.0.255",
            "::1",
            "::ffff:1.2.3.4",
            "1.2.3.4",
            "255.255.255.255",
            "2001:db8::7",
            "192.0.2.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for pair in addrs.windows(2) {
            let first = Identity::ip(pair[0]);
            assert_eq!(first.key(), format!("ip:{}", canonical(pair[0])));
            let copy = first.clone();
            drop(first);
            drop(copy);
            let user = Identity::with_user(pair[0], "u:alice".into());
            drop(user);
            let second = Identity::ip(pair[1]);
            assert_eq!(second.key(), format!("ip:{}", canonical(pair[1])));
            assert_eq!(second.user(), None);
        }
    }
}
