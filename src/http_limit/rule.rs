//! Rules: which requests a limit applies to (method and path pattern), its windows, and whose
//! budget it charges (scope).
//!
//! Invariants:
//!
//! 1. A pattern is matched against the path without its query, segment by segment: a literal
//!    segment equals, `{name}` matches any one non-empty segment, and a trailing `*` (prefix
//!    pattern) matches the rest, including nothing. Matching never allocates.
//! 2. A rule's methods are compared case-sensitively (RFC 9110 §9.1); no method listed means every
//!    method.
//! 3. A window's label (in `RateLimit-Policy` / `RateLimit`) is `rule.index` unless the rule names
//!    its windows; labels use the same characters as rule names, so they never break the quoted
//!    header syntax.

use std::fmt;

use crate::quota::Quota;

/// Whose budget a rule charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One budget per client, shared by every path the rule matches.
    Client,
    /// One budget per client and concrete path (`/items/1` and `/items/2` apart).
    ClientRoute,
    /// One budget per user-level key and address together (a credential used from two addresses
    /// has two budgets; a client without a user-level key is keyed by its address alone).
    UserIp,
    /// One budget for everyone.
    Global,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Scope::Client),
            "client+route" | "client-route" | "route" => Ok(Scope::ClientRoute),
            "user+ip" | "user-ip" => Ok(Scope::UserIp),
            "global" => Ok(Scope::Global),
            other => Err(format!(
                "unknown scope {other:?} (client, client+route, user+ip, global)"
            )),
        }
    }
}

/// A path pattern: `/exact`, `/prefix/*`, `/users/{id}/posts`.
///
/// # Examples
///
/// ```
/// use tollgate::http_limit::PathPattern;
/// let p: PathPattern = "/users/{id}/posts".parse()?;
/// assert!(p.matches("/users/7/posts?page=2"));
/// assert!(!p.matches("/users//posts"));
/// let prefix: PathPattern = "/api/*".parse()?;
/// assert!(prefix.matches("/api/v1/x") && prefix.matches("/api/") && !prefix.matches("/apix"));
/// # Ok::<(), tollgate::http_limit::RuleError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
    prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// `path` up to its query (`?`), if any: a byte search (`?` is ASCII), cheaper than a `char`
/// pattern on the short paths of every request.
#[inline]
pub(crate) fn without_query(path: &str) -> &str {
    match path.bytes().position(|b| b == b'?') {
        Some(at) => &path[..at],
        None => path,
    }
}

impl PathPattern {
    /// Whether `path` (query ignored) matches (invariant 1).
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        if self.segments.is_empty() && self.prefix {
            // `/*`, every path (a default rule's): the query cannot change the leading `/`.
            // Decided inline, with no call (every request of a default rule asks).
            return path.starts_with('/');
        }
        self.matches_segments(path)
    }

    /// [`matches`](Self::matches) for a pattern with segments.
    #[inline(never)]
    fn matches_segments(&self, path: &str) -> bool {
        let path = without_query(path);
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        for (i, segment) in self.segments.iter().enumerate() {
            let (head, tail) = match rest.split_once('/') {
                Some((h, t)) => (h, Some(t)),
                None => (rest, None),
            };
            let ok = match segment {
                Segment::Literal(l) => l == head,
                Segment::Param => !head.is_empty(),
            };
            if !ok {
                return false;
            }
            match tail {
                Some(t) => rest = t,
                None => {
                    // Path used up: the pattern must be too (or the rest is a prefix's `*`).
                    return i + 1 == self.segments.len();
                }
            }
        }
        self.prefix
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rule or pattern that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub(crate) String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

impl std::str::FromStr for PathPattern {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| RuleError(format!("path pattern {text:?}: {why}"));
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| err("must start with '/'"))?;
        let (body, prefix) = match body.strip_suffix('*') {
            Some(b) if b.is_empty() || b.ends_with('/') => (b.strip_suffix('/').unwrap_or(b), true),
            Some(_) => return Err(err("'*' only as the whole last segment (\"/api/*\")")),
            None => (body, false),
        };
        let mut segments = Vec::new();
        if !(prefix && body.is_empty()) {
            for seg in body.split('/') {
                if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                    segments.push(Segment::Param);
                } else if seg.contains(['{', '}', '*', '?']) {
                    return Err(err("'{', '}', '*' and '?' only as whole segments"));
                } else {
                    segments.push(Segment::Literal(seg.to_owned()));
                }
            }
        }
        Ok(PathPattern {
            text: text.to_owned(),
            segments,
            prefix,
        })
    }
}

/// One limit: the requests it applies to, its windows (all must allow), and its scope.
///
/// # Examples
///
/// ```
/// use tollgate::Quota;
/// use tollgate::http_limit::{Rule, Scope};
/// let rule = Rule::new("login", "/login", [Quota::per_minute(5)?], Scope::Client)?
///     .methods(["POST"]);
/// assert!(rule.applies("POST", "/login"));
/// assert!(!rule.applies("GET", "/login"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) methods: Vec<String>,
    pub(crate) pattern: PathPattern,
    pub(crate) quotas: Vec<Quota>,
    pub(crate) scope: Scope,
    pub(crate) labels: Vec<String>,
    pub(crate) default: bool,
    pub(crate) dry_run: bool,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Rule {
    /// A rule for every method on `pattern`.
    ///
    /// # Errors
    ///
    /// [`RuleError`] for a bad pattern, no quota, or a name that is empty or not a header token
    /// (it is quoted in `RateLimit-Policy`).
    pub fn new(
        name: &str,
        pattern: &str,
        quotas: impl IntoIterator<Item = Quota>,
        scope: Scope,
    ) -> Result<Rule, RuleError> {
        if !valid_name(name) {
            return Err(RuleError(format!(
                "rule name {name:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        if quotas.is_empty() {
            return Err(RuleError(format!("rule {name:?} has no window")));
        }
        Ok(Rule {
            name: name.to_owned(),
            methods: Vec::new(),
            pattern: pattern.parse()?,
            labels: (0..quotas.len()).map(|i| format!("{name}.{i}")).collect(),
            quotas,
            scope,
            default: false,
            dry_run: false,
        })
    }

    /// Names the rule's windows in the rate-limit headers, in order (default: `name.0`,
    /// `name.1`, ...; invariant 3).
    ///
    /// # Errors
    ///
    /// [`RuleError`] if the count differs from the rule's windows or a label is empty or not a
    /// header token.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::Quota;
    /// use tollgate::http_limit::{Rule, Scope};
    /// let rule = Rule::new("api", "/*", [Quota::per_second(10)?, Quota::per_minute(300)?], Scope::Client)?
    ///     .window_labels(["per-second", "per-minute"])?;
    /// assert_eq!(rule.labels(), ["per-second", "per-minute"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window_labels<S: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = S>,
    ) -> Result<Rule, RuleError> {
        let labels: Vec<String> = labels.into_iter().map(Into::into).collect();
        if labels.len() != self.quotas.len() {
            return Err(RuleError(format!(
                "rule {:?}: {} labels for {} windows",
                self.name,
                labels.len(),
                self.quotas.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|l| !valid_name(l)) {
            return Err(RuleError(format!(
                "window label {bad:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        self.labels = labels;
        Ok(self)
    }

    /// Makes this a default rule: it applies only to requests that no other (non-default) rule
    /// matches. nginx's `limit_req` inheritance: a location with limits of its own does not also
    /// pay the server-wide ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock};
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 100)
    ///     .rule(Rule::new("login", "/login", [Quota::per_minute(1)?], Scope::Client)?)
    ///     .rule(Rule::new("rest", "/*", [Quota::per_minute(100)?], Scope::Client)?.as_default())
    ///     .build()?;
    /// let peer = "192.0.2.1".parse()?;
    /// let none: [(&str, &[u8]); 0] = [];
    /// let login = limiter.decide("POST", "/login", peer, none);
    /// assert_eq!(login.windows().len(), 1, "only the login rule");
    /// assert_eq!(limiter.decide("GET", "/x", peer, none).header("x-ratelimit-limit").as_deref(), Some("100"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_default(mut self) -> Rule {
        self.default = true;
        self
    }

    /// Makes this rule a shadow (per-rule dry run, as Envoy's shadow mode or nginx's
    /// `limit_req_dry_run` in one location): it decides and charges as if it enforced, counts
    /// what it would have refused (`RuleStats::dry_run_refused`), but never refuses and adds no
    /// window to the verdict's headers, so clients see no change while a new rule is trialled.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock};
    /// use tollgate::http_limit::{HttpLimiter, Rule, Scope};
    /// let limiter = HttpLimiter::builder()
    ///     .memory(ManualClock::new(), 100)
    ///     .rule(Rule::new("trial", "/*", [Quota::per_minute(1)?], Scope::Client)?.dry_run(true))
    ///     .build()?;
    /// let none: [(&str, &[u8]); 0] = [];
    /// let peer = "192.0.2.1".parse()?;
    /// for _ in 0..3 {
    ///     assert!(limiter.decide("GET", "/", peer, none).is_allowed());
    /// }
    /// assert_eq!(limiter.stats().rules[0].dry_run_refused, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dry_run(mut self, dry_run: bool) -> Rule {
        self.dry_run = dry_run;
        self
    }

    /// Whether this rule is a shadow ([`dry_run`](Self::dry_run)).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Whether this is a default rule ([`as_default`](Self::as_default)).
    pub fn is_default(&self) -> bool {
        self.default
    }

    /// The windows' labels in the rate-limit headers.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Restricts the rule to these methods (invariant 2).
    pub fn methods<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> Rule {
        self.methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a request with `method` and `path` falls under this rule.
    #[inline]
    pub fn applies(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.pattern.matches(path)
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's windows.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The rule's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }
}
