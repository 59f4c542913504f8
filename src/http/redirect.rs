//! Redirects, followed by the fetcher itself (ureq's own following is off): which hops are
//! allowed, what a hop to another origin may carry, and how a `Location` resolves.
//!
//! Invariants:
//!
//! 1. An *origin* is (scheme, host, port) with the scheme and host lower-cased and the default
//!    port made explicit; two URLs are the same origin only if all three match (RFC 6454). An
//!    https → http hop is therefore always another origin.
//! 2. The builder's headers (and the credentials of the template's userinfo, which the builder
//!    turns into an `Authorization` header) go only to the template's origin: under
//!    [`RedirectPolicy::SameOrigin`] a hop elsewhere is refused, under
//!    [`RedirectPolicy::FollowStripped`] it is made without them, and once a chain has left the
//!    origin it never carries them again (a server elsewhere could bounce us back with a URL of
//!    its choice).
//! 3. A chain is at most `max_redirects` hops, all within the request's one timeout.
//! 4. A URL shown to people never has userinfo (see [`redact_userinfo`]).

use std::fmt;

use ureq::http::Uri;

/// Which redirects an [`HttpFetcher`](crate::HttpFetcher) follows, set with
/// [`HttpFetcherBuilder::redirects`](crate::http::HttpFetcherBuilder::redirects).
///
/// Whatever the policy, the builder's headers (API keys, cookies, `Authorization`, the
/// template's `user:password@`) are only ever sent to the template's origin (scheme, host and
/// port). A redirect is a 301, 302, 303, 307 or 308 with a `Location`; 303 (and 301/302 of a
/// request with a body) continue as a `GET` without the body, 307/308 repeat the method and body.
///
/// # Examples
///
/// ```
/// use tollgate::http::RedirectPolicy;
///
/// assert_eq!(RedirectPolicy::default(), RedirectPolicy::SameOrigin);
/// assert_eq!("follow-stripped".parse::<RedirectPolicy>(), Ok(RedirectPolicy::FollowStripped));
/// assert_eq!(RedirectPolicy::None.to_string(), "none");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RedirectPolicy {
    /// Follow redirects within the template's origin only; a redirect to another origin fails
    /// the fetch ([`ErrorKind::Protocol`](crate::ErrorKind::Protocol), permanent). The default.
    #[default]
    SameOrigin,
    /// Follow every redirect, but send a hop to another origin without the builder's headers and
    /// credentials (and every later hop of that chain too), like curl without
    /// `--location-trusted`.
    FollowStripped,
    /// Follow none: a redirect is returned as an [`ErrorKind::Status`](crate::ErrorKind::Status)
    /// error (permanent) naming its `Location`.
    None,
}

impl fmt::Display for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedirectPolicy::SameOrigin => "same-origin",
            RedirectPolicy::FollowStripped => "follow-stripped",
            RedirectPolicy::None => "none",
        })
    }
}

impl std::str::FromStr for RedirectPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "same-origin" => Ok(RedirectPolicy::SameOrigin),
            "follow-stripped" | "all" => Ok(RedirectPolicy::FollowStripped),
            "none" => Ok(RedirectPolicy::None),
            _ => Err(format!(
                "`{s}` is not a redirect policy (same-origin, follow-stripped or none)"
            )),
        }
    }
}

/// (scheme, host, port), normalised (invariant 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http`/`https` URL; `None` for anything else.
    pub(crate) fn of(url: &str) -> Option<Origin> {
        let uri = Uri::try_from(url).ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
            host,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `status` is a redirect the fetcher may follow.
pub(crate) fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Whether a redirect with `status` keeps the method and body (307, 308), rather than going on
/// as a `GET` without a body.
pub(crate) fn keeps_method(status: u16, method: &str) -> bool {
    match status {
        307 | 308 => true,
        // 301/302 of a GET or HEAD stay what they are; of a POST (or other) become a GET, as
        // curl and browsers do. 303 is always a GET (HEAD stays HEAD).
        301 | 302 => method == "GET" || method == "HEAD",
        _ => method == "HEAD",
    }
}

/// `location` resolved against `base` (an absolute URL), without any fragment or userinfo (a
/// server's `user:pass@` is not followed: invariant 4); `None` if the result is not an absolute
/// http(s) URL.
pub(crate) fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let location = location.split_once('#').map_or(location, |(l, _)| l);
    if location.is_empty() {
        return None;
    }
    let (scheme, rest) = base.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let path = &rest[authority_end..];
    let resolved = if location.contains("://") {
        location.to_owned()
    } else if let Some(net_path) = location.strip_prefix("//") {
        format!("{scheme}://{net_path}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        format!("{scheme}://{authority}{path}{location}")
    } else {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
        format!("{scheme}://{authority}{dir}{location}")
    };
    let (resolved, _) = split_userinfo(&resolved);
    Origin::of(&resolved)?;
    Some(resolved)
}

/// `url` with any `user[:password]@` replaced by `***@` (invariant 4).
///
/// # Examples
///
/// ```
/// assert_eq!(tollgate::http::redact_userinfo("https://me:hunter2@h.example/x?y"), "https://***@h.example/x?y");
/// assert_eq!(tollgate::http::redact_userinfo("https://h.example/a@b"), "https://h.example/a@b");
/// ```
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Splits the userinfo off an absolute URL: `(url without it, Some((user, password)))`,
/// percent-decoded.
pub(crate) fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let info = &rest[..at];
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    (
        format!("{scheme}://{}", &rest[at + 1..]),
        Some((percent_decode(user), percent_decode(password))),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Basic base64(user:password)` (RFC 7617).
pub(crate) fn basic_auth(user: &str, password: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(6 + bytes.len().div_ceil(3) * 4);
    out.push_str("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let a = Origin::of("http://Example.com/x").unwrap();
        assert_eq!(a, Origin::of("http://example.com:80/y?z").unwrap());
        assert_ne!(a, Origin::of("https://example.com/x").unwrap());
        assert_ne!(a, Origin::of("http://example.com:81/x").unwrap());
        assert_ne!(a, Origin::of("http://other.com/x").unwrap());
        assert!(Origin::of("ftp://example.com/").is_none());
        assert!(Origin::of("/relative").is_none());
    }

    #[test]
    fn locations() {
        let base = "http://h:1/a/b?q=1";
        assert_eq!(resolve(base, "/x").unwrap(), "http://h:1/x");
        assert_eq!(resolve(base, "c").unwrap(), "http://h:1/a/c");
        assert_eq!(resolve(base, "?r=2").unwrap(), "http://h:1/a/b?r=2");
        assert_eq!(resolve(base, "//o:2/p").unwrap(), "http://o:2/p");
        assert_eq!(resolve(base, "https://o/p#frag").unwrap(), "https://o/p");
        assert_eq!(resolve(base, "http://evil:pw@o/p").unwrap(), "http://o/p");
        assert!(resolve(base, "ftp://o/p").is_none());
        assert!(resolve(base, "").is_none());
        assert!(resolve(base, "http://").is_none());
    }

    #[test]
    fn userinfo() {
        assert_eq!(redact_userinfo("http://u:p@h/x"), "http://***@h/x");
        assert_eq!(redact_userinfo("http://h/x@y"), "http://h/x@y");
        assert_eq!(
            split_userinfo("http://us%40r:p%3Ass@h/x"),
            (
                "http://h/x".to_owned(),
                Some(("us@r".to_owned(), "p:ss".to_owned()))
            )
        );
        assert_eq!(
            split_userinfo("http://h/x"),
            ("http://h/x".to_owned(), None)
        );
    }

    #[test]
    fn basic() {
        assert_eq!(basic_auth("martin", "secret"), "Basic bWFydGluOnNlY3JldA==");
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", ""), "Basic YTo=");
    }

    #[test]
    fn methods() {
        assert!(keeps_method(307, "POST"));
        assert!(keeps_method(308, "PUT"));
        assert!(!keeps_method(303, "POST"));
        assert!(!keeps_method(302, "POST"));
        assert!(keeps_method(302, "GET"));
    }
}
