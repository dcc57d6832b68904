//! A compiled set of principal patterns, matched without scanning the list.
//!
//! Threat: a slow path an attacker can pick. A rule with a thousand source identities must not
//! cost a thousand comparisons per request; here patterns are a trie over the SPIFFE ID's path
//! segments, one per trust domain, so a match walks the segments of the one ID at hand and
//! branches at most twice per segment (the literal child and the `*` child).

use std::collections::HashMap;

use crate::parse::spiffe::{PrincipalPattern, SpiffeId};

#[derive(Debug, Default)]
struct Node {
    /// A pattern ends here.
    end: bool,
    literal: HashMap<String, Node>,
    wildcard: Option<Box<Node>>,
}

impl Node {
    fn insert<'s>(&mut self, mut segments: impl Iterator<Item = Option<&'s str>>) {
        match segments.next() {
            None => self.end = true,
            Some(Some(seg)) => self.literal.entry(seg.to_string()).or_default().insert(segments),
            Some(None) => self.wildcard.get_or_insert_with(Box::default).insert(segments),
        }
    }

    fn matches(&self, segments: &[&str]) -> bool {
        let Some((first, rest)) = segments.split_first() else {
            return self.end;
        };
        self.literal.get(*first).is_some_and(|n| n.matches(rest))
            || self.wildcard.as_ref().is_some_and(|n| n.matches(rest))
    }
}

/// Principal patterns (`*`, exact SPIFFE IDs, whole-segment `*` wildcards), compiled.
#[derive(Debug, Default)]
pub struct PrincipalSet {
    any: bool,
    by_trust_domain: HashMap<String, Node>,
    len: usize,
}

impl PrincipalSet {
    pub fn insert(&mut self, pattern: &PrincipalPattern) {
        self.len += 1;
        match pattern {
            PrincipalPattern::Any => self.any = true,
            PrincipalPattern::Exact(id) => {
                // An Exact pattern was parsed as a SPIFFE ID; re-parsing cannot fail.
                if let Ok(id) = SpiffeId::parse(id.as_bytes()) {
                    self.by_trust_domain
                        .entry(id.trust_domain().to_string())
                        .or_default()
                        .insert(id.path().split('/').skip(1).map(Some));
                }
            }
            PrincipalPattern::Segments { trust_domain, segments } => self
                .by_trust_domain
                .entry(trust_domain.clone())
                .or_default()
                .insert(segments.iter().map(Option::as_deref)),
        }
    }

    /// No pattern at all (the rule does not restrict sources).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        if self.any {
            return true;
        }
        let Some(root) = self.by_trust_domain.get(id.trust_domain()) else {
            return false;
        };
        let segments: Vec<&str> = id.path().split('/').skip(1).collect();
        root.matches(&segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> PrincipalSet {
        let mut s = PrincipalSet::default();
        for p in patterns {
            s.insert(&PrincipalPattern::parse(p).unwrap());
        }
        s
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s.as_bytes()).unwrap()
    }

    /// The set agrees with matching each pattern one by one.
    #[test]
    fn agrees_with_the_patterns() {
        let patterns = [
            "spiffe://cluster.local/ns/web/sa/web",
            "spiffe://cluster.local/ns/*/sa/batch",
            "spiffe://cluster.local/ns/ops/sa/*",
            "spiffe://cluster.local/ns/*",
            "spiffe://other.example",
            "spiffe://other.example/a/*/c/*",
        ];
        let s = set(&patterns);
        let parsed: Vec<PrincipalPattern> = patterns.iter().map(|p| PrincipalPattern::parse(p).unwrap()).collect();
        for candidate in [
            "spiffe://cluster.local/ns/web/sa/web",
            "spiffe://cluster.local/ns/web/sa/api",
            "spiffe://cluster.local/ns/x/sa/batch",
            "spiffe://cluster.local/ns/ops/sa/admin",
            "spiffe://cluster.local/ns/ops/sa/admin/x",
            "spiffe://cluster.local/ns/ops",
            "spiffe://cluster.local/ns",
            "spiffe://cluster.local",
            "spiffe://other.example",
            "spiffe://other.example/a/b/c/d",
            "spiffe://other.example/a/b/c",
            "spiffe://third.example/ns/web/sa/web",
        ] {
            let c = id(candidate);
            assert_eq!(s.matches(&c), parsed.iter().any(|p| p.matches(&c)), "{candidate}");
        }
        assert!(set(&["*"]).matches(&id("spiffe://x/y")));
        assert!(!PrincipalSet::default().matches(&id("spiffe://x/y")));
        assert!(PrincipalSet::default().is_empty());
        assert_eq!(s.len(), 6);
    }
}
