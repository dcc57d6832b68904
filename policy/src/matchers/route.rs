//! Route matching: which requests a rule is about (host, canonical path, method).

use std::cell::Cell;

use serde::Deserialize;

use crate::error::ConfigErrors;
use crate::matchers::hosts::HostTable;
use crate::parse::host::HostPattern;
use crate::parse::token::is_method_token;

/// Which requests a rule is about. Every listed dimension must match; an empty list matches
/// everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatchDoc {
    /// `api.example.com` (exact, port ignored) or `*.example.com` (one or more labels under it).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<PathMatchDoc>,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Exactly one of `exact`, `prefix` (segment-aware: `/api` matches `/api` and `/api/x`, not
/// `/apix`; a prefix ending in `/` is a plain prefix) or `regex` (regex-lite syntax, anchored by
/// the author). Always matched against the canonical path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathMatchDoc {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

/// The parts of a request that routes match on, each computed once per request by the
/// [`crate::view::RequestView`] ([`crate::view::RequestView::route_input`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// The host's match key ([`crate::parse::host::Host::match_key`]: lowercase, port and one
    /// trailing dot removed, an IP literal in its one canonical text), or `None` when the
    /// authority is not a host (userinfo, a bad port, stray characters, a non-canonical IP
    /// spelling...): such a request matches no host-restricted rule, and the checks decide what
    /// that means (fail closed).
    pub host: Option<&'a str>,
    /// The canonical path (see [`crate::parse::path`]).
    pub path: &'a [u8],
    pub method: &'a [u8],
    /// The path-regex work this request has cost so far, shared by every rule of every check
    /// (see [`crate::budget::REGEX_WORK_LIMIT`]).
    pub regex_work: &'a Cell<u64>,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(Vec<u8>),
    /// Segment-aware unless the prefix ends with `/`.
    Prefix(Vec<u8>),
    /// A regex, and the literal text its matches must start with (empty unless the pattern
    /// is anchored with `^` and opens with plain characters): a path without that prefix is
    /// decided without running the regex, whatever its length.
    Regex(Box<CompiledRegex>),
}

#[derive(Debug)]
struct CompiledRegex {
    re: regex_lite::Regex,
    prefix: Vec<u8>,
    /// Its compiled size (bytes, as regex-lite counts them): one run on an `n`-byte path costs
    /// up to `size × n` work units.
    size: u64,
}

/// The literal prefix every match of `pattern` starts with: the plain characters after a
/// leading `^`, up to the first character with a meaning in regex syntax (a character that a
/// quantifier follows is not part of it). Conservative: empty when unsure.
fn literal_prefix(pattern: &str) -> Vec<u8> {
    let Some(rest) = pattern.strip_prefix('^') else { return Vec::new() };
    if has_top_level_alternation(rest) {
        return Vec::new();
    }
    let bytes = rest.as_bytes();
    let mut end = 0;
    while let Some(&b) = bytes.get(end) {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-' | b'_' | b'~' | b'%' | b'=' | b',' | b';' | b':' | b'@' | b'!' | b'&' | b'\'' | b'#' | b' '
            )
        {
            end += 1;
        } else {
            break;
        }
    }
    // `^/ab?` or `^/ab*`: the last plain character is quantified.
    if matches!(bytes.get(end), Some(b'?' | b'*' | b'{')) {
        end = end.saturating_sub(1);
    }
    bytes.get(..end).map(<[u8]>::to_vec).unwrap_or_default()
}

/// Whether `pattern` has a `|` outside every group (or cannot be read: unbalanced groups).
fn has_top_level_alternation(pattern: &str) -> bool {
    let mut depth = 0usize;
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'[' => {
                // A class: `]` right after `[` or `[^` is a literal; escapes are skipped.
                let mut first = true;
                loop {
                    match bytes.next() {
                        None => return true,
                        Some(b'\\') => {
                            bytes.next();
                        }
                        Some(b'^') if first => continue,
                        Some(b']') if !first => break,
                        Some(_) => {}
                    }
                    first = false;
                }
            }
            b'(' => depth += 1,
            b')' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            b'|' if depth == 0 => return true,
            _ => {}
        }
    }
    depth != 0
}

/// Whether a rule's route covers a request. Three-valued because one matcher has a per-request
/// cost cap: the path regexes one request runs may cost at most
/// [`crate::budget::REGEX_WORK_LIMIT`] in all, and a regex past it is not run: the request is
/// [`Match::Undecided`] for a rule whose path list hinges on it. Each check then fails closed in
/// its own terms (a deny rule applies, an allow rule does not admit, a token requirement holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    No,
    Yes,
    /// The route may cover the request; a capped regex would have to decide.
    Undecided,
}

impl Match {
    /// Whether the route covers the request or may cover it (the fail-closed reading for a
    /// rule that only adds requirements).
    pub fn may(self) -> bool {
        self != Match::No
    }
}

impl PathMatcher {
    fn matches(&self, path: &[u8], work: &Cell<u64>) -> Match {
        let yes = |b: bool| if b { Match::Yes } else { Match::No };
        match self {
            PathMatcher::Exact(p) => yes(path == p.as_slice()),
            PathMatcher::Prefix(p) => {
                yes(path.starts_with(p)
                    && (p.ends_with(b"/") || path.len() == p.len() || path.get(p.len()) == Some(&b'/')))
            }
            PathMatcher::Regex(r) if !path.starts_with(&r.prefix) => Match::No,
            PathMatcher::Regex(r) => {
                let cost = r.size.saturating_mul(path.len() as u64);
                let total = work.get().saturating_add(cost);
                if total > crate::budget::REGEX_WORK_LIMIT {
                    return Match::Undecided;
                }
                work.set(total);
                yes(r.re.is_match(&String::from_utf8_lossy(path)))
            }
        }
    }
}

/// A compiled `match` block. Empty dimensions match everything.
#[derive(Debug, Default)]
pub struct RouteMatch {
    hosts: HostTable,
    paths: Vec<PathMatcher>,
    methods: Vec<Vec<u8>>,
}

impl RouteMatch {
    pub fn compile(doc: &RouteMatchDoc, at: &str, errs: &mut ConfigErrors) -> RouteMatch {
        let mut m = RouteMatch::default();
        for (i, host) in doc.hosts.iter().enumerate() {
            match HostPattern::parse(host) {
                Ok(pattern) => m.hosts.insert(&pattern, 0),
                Err(e) => errs.push(format!("{at}.hosts[{i}]"), e),
            }
        }
        for (i, p) in doc.paths.iter().enumerate() {
            if let Some(matcher) = compile_path(p, &format!("{at}.paths[{i}]"), errs) {
                m.paths.push(matcher);
            }
        }
        for (i, method) in doc.methods.iter().enumerate() {
            if !is_method_token(method) {
                errs.push(format!("{at}.methods[{i}]"), "must be an uppercase HTTP method token such as GET");
            }
            m.methods.push(method.as_bytes().to_vec());
        }
        m
    }

    /// Whether the rule names hosts (and so cannot decide about a request whose authority is
    /// not a host).
    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// Whether the route covers the request: host, then method, then paths (regexes last, and
    /// within the request's [`crate::budget::REGEX_WORK_LIMIT`]).
    pub fn matches(&self, input: &RouteInput<'_>) -> Match {
        let host_ok = !self.has_hosts() || input.host.is_some_and(|host| self.hosts.covers(host));
        if !host_ok || !(self.methods.is_empty() || self.methods.iter().any(|m| m.as_slice() == input.method)) {
            return Match::No;
        }
        if self.paths.is_empty() {
            return Match::Yes;
        }
        let mut answer = Match::No;
        for p in &self.paths {
            match p.matches(input.path, input.regex_work) {
                Match::Yes => return Match::Yes,
                Match::Undecided => answer = Match::Undecided,
                Match::No => {}
            }
        }
        answer
    }
}

fn compile_path(p: &PathMatchDoc, at: &str, errs: &mut ConfigErrors) -> Option<PathMatcher> {
    let set = [&p.exact, &p.prefix, &p.regex].iter().filter(|o| o.is_some()).count();
    if set != 1 {
        errs.push(at, "set exactly one of exact, prefix or regex");
        return None;
    }
    let must_be_canonical = |field: &str, v: &str| {
        if !v.starts_with('/') {
            Some(format!("{at}.{field}: must start with '/'"))
        } else if crate::parse::path::canonical(v.as_bytes()).as_ref() != v.as_bytes()
            && !(field == "prefix" && v.ends_with('/'))
        {
            Some(format!("{at}.{field}: must be written in canonical form (no query, '//', dot segments or encoded unreserved characters); requests are matched on their canonical path"))
        } else {
            None
        }
    };
    if let Some(v) = &p.exact {
        if let Some(msg) = must_be_canonical("exact", v) {
            let (path, msg) = msg.split_once(": ").unwrap_or((at, &msg));
            errs.push(path, msg);
            return None;
        }
        return Some(PathMatcher::Exact(v.as_bytes().to_vec()));
    }
    if let Some(v) = &p.prefix {
        if let Some(msg) = must_be_canonical("prefix", v) {
            let (path, msg) = msg.split_once(": ").unwrap_or((at, &msg));
            errs.push(path, msg);
            return None;
        }
        return Some(PathMatcher::Prefix(v.as_bytes().to_vec()));
    }
    if let Some(v) = &p.regex {
        if v.len() > 1024 {
            errs.push(format!("{at}.regex"), "longer than 1024 characters");
            return None;
        }
        // Bounded compile (see crate::budget): a counted repetition such as (?:.{1000}){200}
        // stops compiling as soon as its program outgrows the limit.
        let built = regex_lite::RegexBuilder::new(v)
            .size_limit(crate::budget::REGEX_SIZE_LIMIT)
            .nest_limit(crate::budget::REGEX_NEST_LIMIT)
            .build();
        return match built {
            Ok(re) => {
                // Measured within the limit the regex just compiled under, so never `None` here;
                // the limit itself is the safe answer if it were.
                let size = crate::budget::regex_compiled_size(v).unwrap_or(crate::budget::REGEX_SIZE_LIMIT);
                Some(PathMatcher::Regex(Box::new(CompiledRegex { re, prefix: literal_prefix(v), size: size as u64 })))
            }
            Err(e) => {
                errs.push(
                    format!("{at}.regex"),
                    format!(
                        "not a valid regex within meshguard's limits ({} bytes compiled, nesting {}): {}",
                        crate::budget::REGEX_SIZE_LIMIT,
                        crate::budget::REGEX_NEST_LIMIT,
                        e.to_string().replace('\n', " ")
                    ),
                );
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Result<RouteMatch, ConfigErrors> {
        let doc: RouteMatchDoc = serde_json::from_str(json).unwrap();
        let mut errs = ConfigErrors::default();
        let m = RouteMatch::compile(&doc, "m", &mut errs);
        if errs.is_empty() {
            Ok(m)
        } else {
            Err(errs)
        }
    }

    fn hit(m: &RouteMatch, authority: &str, path: &str, method: &str) -> bool {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b":authority", authority.as_bytes()), (b":path", path.as_bytes()), (b":method", method.as_bytes())];
        let view = crate::view::RequestView::new(&pairs, crate::view::request::Peer::default(), Default::default());
        m.matches(&view.route_input()) == Match::Yes
    }

    #[test]
    fn hosts() {
        let m = route(r#"{"hosts": ["API.example.com", "*.svc.local"]}"#).unwrap();
        assert!(hit(&m, "api.example.com", "/", "GET"));
        assert!(hit(&m, "API.EXAMPLE.COM.:8443", "/", "GET"));
        assert!(hit(&m, "a.svc.local", "/", "GET"));
        assert!(hit(&m, "a.b.svc.local:80", "/", "GET"));
        assert!(!hit(&m, "svc.local", "/", "GET"), "*.x never matches x itself");
        assert!(!hit(&m, "evilsvc.local", "/", "GET"));
        assert!(!hit(&m, "api.example.com.evil.net", "/", "GET"));
        assert!(!hit(&m, "evilexample.com", "/", "GET"));
    }

    #[test]
    fn paths_match_on_the_canonical_form() {
        let m =
            route(r#"{"paths": [{"prefix": "/admin"}, {"exact": "/login"}, {"regex": "^/v[0-9]+/items$"}]}"#).unwrap();
        for p in [
            "/admin",
            "/admin/",
            "/admin/x",
            "/%61dmin/x",
            "//admin",
            "/x/../admin",
            "/login",
            "/login?next=/",
            "/v2/items",
        ] {
            assert!(hit(&m, "h", p, "GET"), "{p}");
        }
        for p in ["/adminx", "/login/", "/logins", "/v2/items/x", "/", "/ad"] {
            assert!(!hit(&m, "h", p, "GET"), "{p}");
        }
        let m = route(r#"{"paths": [{"prefix": "/api/"}]}"#).unwrap();
        assert!(hit(&m, "h", "/api/x", "GET"));
        assert!(!hit(&m, "h", "/api", "GET"));
    }

    #[test]
    fn a_regex_literal_prefix_is_conservative() {
        let p = |s: &str| String::from_utf8(literal_prefix(s)).unwrap();
        assert_eq!(p("^/items/[0-9]+$"), "/items/");
        assert_eq!(p("^/v1/x$"), "/v1/x");
        assert_eq!(p("^/ab?c"), "/a");
        assert_eq!(p("^/ab*"), "/a");
        assert_eq!(p("^/a{2}"), "/");
        assert_eq!(p("^/a+"), "/a", "a+ still starts with one a");
        assert_eq!(p("^/a|^/b"), "", "alternation: unsure");
        assert_eq!(p("^/a(b|c)|x"), "");
        assert_eq!(p("^/api/(users|orders)/[0-9]+$"), "/api/");
        assert_eq!(p("^/api/[|]x"), "/api/");
        assert_eq!(p("^/api/[]|]x"), "/api/");
        assert_eq!(p("^/api/\\|x"), "/api/");
        assert_eq!(p("^/api/(x"), "", "unbalanced: unsure");
        assert_eq!(p("^(?i)/admin"), "");
        assert_eq!(p("/items"), "", "unanchored");
        assert_eq!(p("^/a.b"), "/a");
        assert_eq!(p("^/a\\.b"), "/a");
        assert_eq!(p("^/a(b)?"), "/a");
    }

    #[test]
    fn methods() {
        let m = route(r#"{"methods": ["GET", "HEAD"]}"#).unwrap();
        assert!(hit(&m, "h", "/", "GET"));
        assert!(!hit(&m, "h", "/", "get"));
        assert!(!hit(&m, "h", "/", "POST"));
    }

    #[test]
    fn invalid_routes_name_the_field() {
        let e = route(r#"{"hosts": ["ok.com", "bad host"], "paths": [{"prefix": "/a", "exact": "/b"}, {"regex": "("}, {"exact": "/a/../b"}, {"prefix": "x"}], "methods": ["get"]}"#).unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["m.hosts[1]", "m.paths[0]", "m.paths[1].regex", "m.paths[2].exact", "m.paths[3].prefix", "m.methods[0]"]
        );
        assert!(route(r#"{"hosts": ["*.*.com"]}"#).is_err());
        assert!(route(r#"{"hosts": ["*"]}"#).is_err());
    }
}
