//! URL templates: `https://api.example.com/users/{key}/widgets`, checked once, rendered per key.
//!
//! Invariants:
//!
//! 1. A [`UrlTemplate`] only exists for a template that parses as an absolute `http`/`https` URL
//!    with a host, holds at least one `{key}`, every `{key}` after the authority (in the path or
//!    query), no other `{`/`}` and no fragment. So rendering never fails per request.
//! 2. A rendered key is made only of RFC 3986 unreserved characters and `%XX` escapes, and is
//!    never `.` or `..`: it is exactly one path segment (or one query value), whatever the key.
//!    Decoding the escapes gives the key back byte for byte.

use std::fmt;

use super::HttpConfigError;

/// The placeholder a template must contain.
const PLACEHOLDER: &str = "{key}";

/// A checked URL template (invariant 1).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct UrlTemplate {
    /// The template split at each `{key}`: `pieces.len() >= 2`.
    pieces: Vec<String>,
    /// Length of all pieces together, to size the rendered string.
    literal_len: usize,
}

impl UrlTemplate {
    /// Checks `template` (invariant 1). The error names what is wrong with it.
    pub(crate) fn parse(template: &str) -> Result<UrlTemplate, (HttpConfigError, String)> {
        let fail =
            |e: HttpConfigError, why: String| Err((e, format!("URL template {template:?}: {why}")));
        if !template.contains(PLACEHOLDER) {
            return fail(HttpConfigError::NoKeyPlaceholder, "has no {key}".into());
        }
        let pieces: Vec<String> = template.split(PLACEHOLDER).map(str::to_owned).collect();
        if pieces.iter().any(|p| p.contains(['{', '}'])) {
            return fail(
                HttpConfigError::BadUrlTemplate,
                "has a brace that is not part of {key}".into(),
            );
        }
        if template.contains('#') {
            return fail(
                HttpConfigError::BadUrlTemplate,
                "has a fragment (#), which is never sent".into(),
            );
        }
        let Some((scheme, rest)) = template.split_once("://") else {
            return fail(
                HttpConfigError::BadUrlScheme,
                "has no scheme (expected http:// or https://)".into(),
            );
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" if cfg!(feature = "https") => {}
            "https" => {
                return fail(
                    HttpConfigError::BadUrlScheme,
                    "is https, but tollgate was built without its `https` feature".into(),
                );
            }
            other => {
                return fail(
                    HttpConfigError::BadUrlScheme,
                    format!("has scheme {other:?}; only http and https are supported"),
                );
            }
        }
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        if rest[..authority_len].contains(PLACEHOLDER) || rest[..authority_len].is_empty() {
            return fail(
                HttpConfigError::BadUrlTemplate,
                "must name a host, and {key} may only appear in the path or query".into(),
            );
        }
        if !port_is_valid(&rest[..authority_len]) {
            return fail(
                HttpConfigError::BadUrlTemplate,
                "has a port that is not a number from 0 to 65535".into(),
            );
        }
        let parsed = UrlTemplate {
            literal_len: pieces.iter().map(String::len).sum(),
            pieces,
        };
        // A probe key shows whether every rendering parses: rendered keys are unreserved
        // characters and escapes only (invariant 2), which are valid wherever a probe key is.
        let probe = parsed.render("k");
        match ureq::http::Uri::try_from(probe.as_str()) {
            Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(parsed),
            Ok(_) => fail(HttpConfigError::BadUrlTemplate, "has no host".into()),
            Err(e) => fail(
                HttpConfigError::BadUrlTemplate,
                format!("does not parse as a URL ({e})"),
            ),
        }
    }

    /// The URL for `key`, percent-encoded as one path segment (invariant 2).
    pub(crate) fn render(&self, key: &str) -> String {
        let mut segment = String::with_capacity(key.len());
        encode_segment(key, &mut segment);
        let mut url =
            String::with_capacity(self.literal_len + segment.len() * (self.pieces.len() - 1));
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                url.push_str(&segment);
            }
            url.push_str(piece);
        }
        url
    }
}

/// Whether the port of `authority` (`[user@]host[:port]`), if any, fits in a `u16`.
fn port_is_valid(authority: &str) -> bool {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, after)| after),
        None => host_port.find(':').map_or("", |i| &host_port[i..]),
    };
    match after_host.strip_prefix(':') {
        None => after_host.is_empty(),
        Some("") => true,
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}

impl fmt::Debug for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pieces.join(PLACEHOLDER))
    }
}

/// Appends `key` percent-encoded so that it is exactly one path segment (invariant 2): every byte
/// but RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~` becomes `%XX`, and the dot segments `.` and
/// `..` are escaped whole so no server or proxy normalises them away.
pub(crate) fn encode_segment(key: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if key == "." || key == ".." {
        for _ in 0..key.len() {
            out.push_str("%2E");
        }
        return;
    }
    for &byte in key.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(s: &str) -> Option<Vec<u8>> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        Some(out)
    }

    fn encoded(key: &str) -> String {
        let mut out = String::new();
        encode_segment(key, &mut out);
        out
    }

    #[test]
    fn renders_every_placeholder() {
        let t = UrlTemplate::parse("http://h:8080/a/{key}/b?again={key}").unwrap();
        assert_eq!(
            t.render("x y/z"),
            "http://h:8080/a/x%20y%2Fz/b?again=x%20y%2Fz"
        );
        assert_eq!(format!("{t:?}"), "http://h:8080/a/{key}/b?again={key}");
    }

    #[test]
    fn dot_segments_are_escaped() {
        assert_eq!(encoded("."), "%2E");
        assert_eq!(encoded(".."), "%2E%2E");
        assert_eq!(encoded("..."), "...");
        assert_eq!(encoded("a.b"), "a.b");
        assert_eq!(encoded("é"), "%C3%A9");
        assert_eq!(encoded(""), "");
    }

    #[test]
    fn rejects_bad_templates() {
        let kind = |t: &str| UrlTemplate::parse(t).unwrap_err().0;
        assert_eq!(kind("http://h/users"), HttpConfigError::NoKeyPlaceholder);
        assert_eq!(kind("http://h/{id}/{key}"), HttpConfigError::BadUrlTemplate);
        assert_eq!(kind("http://h/{key}}"), HttpConfigError::BadUrlTemplate);
        assert_eq!(kind("http://h/{key}#frag"), HttpConfigError::BadUrlTemplate);
        assert_eq!(kind("ftp://h/{key}"), HttpConfigError::BadUrlScheme);
        assert_eq!(kind("h/{key}"), HttpConfigError::BadUrlScheme);
        assert_eq!(
            kind("http://{key}.example.com/"),
            HttpConfigError::BadUrlTemplate
        );
        assert_eq!(kind("http:///{key}"), HttpConfigError::BadUrlTemplate);
        assert_eq!(
            kind("http://h:99999999/{key}"),
            HttpConfigError::BadUrlTemplate
        );
        assert_eq!(kind("http://h h/{key}"), HttpConfigError::BadUrlTemplate);
        assert_eq!(kind("http://h:8x/{key}"), HttpConfigError::BadUrlTemplate);
        assert_eq!(kind("http://[::1/{key}"), HttpConfigError::BadUrlTemplate);
        let (_, why) = UrlTemplate::parse("gopher://h/{key}").unwrap_err();
        assert!(why.contains("gopher"), "{why}");
    }

    #[test]
    fn accepts_good_templates() {
        for t in [
            "http://127.0.0.1:1/{key}",
            "HTTP://example.com/{key}",
            "http://example.com/?q={key}",
            "http://[::1]:80/x/{key}/y",
        ] {
            assert!(UrlTemplate::parse(t).is_ok(), "{t}");
        }
        let https = UrlTemplate::parse("https://api.example.com/users/{key}/widgets");
        #[cfg(feature = "https")]
        assert!(https.is_ok());
        #[cfg(not(feature = "https"))]
        assert_eq!(https.unwrap_err().0, HttpConfigError::BadUrlScheme);
    }

    proptest! {
        #[test]
        fn encoding_round_trips_and_stays_one_segment(key in ".*") {
            let out = encoded(&key);
            prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert!(out != "." && out != "..");
            prop_assert_eq!(decode(&out).unwrap(), key.as_bytes());
        }

        #[test]
        fn every_rendering_parses(key in ".*") {
            let t = UrlTemplate::parse("http://example.com/users/{key}/w?k={key}").unwrap();
            let url = t.render(&key);
            let uri = ureq::http::Uri::try_from(url.as_str()).unwrap();
            prop_assert_eq!(uri.host(), Some("example.com"));
            let segment = uri.path().split('/').nth(2).unwrap();
            prop_assert_eq!(decode(segment).unwrap(), key.as_bytes());
        }
    }
}
