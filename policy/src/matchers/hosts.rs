//! Which rules name which hosts: one hash lookup for exact hosts, one walk down a
//! reversed-label trie for `*.` wildcards, so the cost of a lookup grows with the number of
//! labels in the host, never with the number of rules or hosts. Patterns come from
//! [`HostPattern::parse`], the one host-pattern syntax of every section (identity routes and
//! egress rules alike).

use std::collections::HashMap;

use crate::parse::host::HostPattern;

/// Host patterns → the indexes of the rules that name them.
#[derive(Debug, Default)]
pub struct HostTable {
    /// Exact host match key → rules naming it, in rule order.
    exact: HashMap<String, Vec<u32>>,
    suffixes: LabelNode,
}

impl HostTable {
    /// Record that rule `rule` names `pattern`. Rules are inserted in increasing order.
    pub fn insert(&mut self, pattern: &HostPattern, rule: u32) {
        match pattern {
            HostPattern::Exact(key, _) => {
                let rules = self.exact.entry(key.clone()).or_default();
                if rules.last() != Some(&rule) {
                    rules.push(rule);
                }
            }
            HostPattern::Suffix(suffix) => self.suffixes.insert(suffix, rule),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.children.is_empty()
    }

    /// The rules naming the host with match key `key`, sorted and without duplicates. A `*.`
    /// pattern covers only DNS names (`wildcards`: the host is one); IP literals, `localhost`
    /// and metadata names are named by exact patterns alone.
    pub fn collect(&self, key: &str, wildcards: bool, out: &mut Vec<u32>) {
        if let Some(rules) = self.exact.get(key) {
            out.extend_from_slice(rules);
        }
        if wildcards {
            self.suffixes.collect(key, out);
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Whether any pattern names the host with match key `key` (wildcards included).
    pub fn covers(&self, key: &str) -> bool {
        self.exact.contains_key(key) || self.suffixes.covers(key)
    }
}

/// Reversed-label trie of `*.` suffixes: `*.example.com` sits at `com` → `example`.
#[derive(Debug, Default)]
struct LabelNode {
    children: HashMap<Box<str>, LabelNode>,
    /// Rules with `*.` + the labels down to here.
    wildcard_rules: Vec<u32>,
}

impl LabelNode {
    fn insert(&mut self, suffix: &str, rule: u32) {
        let mut node = self;
        for label in suffix.rsplit('.') {
            node = node.children.entry(label.into()).or_default();
        }
        if node.wildcard_rules.last() != Some(&rule) {
            node.wildcard_rules.push(rule);
        }
    }

    /// Whether some wildcard covers `name`.
    fn covers(&self, name: &str) -> bool {
        let total = name.split('.').count();
        let mut node = self;
        for (consumed, label) in name.rsplit('.').enumerate() {
            let Some(next) = node.children.get(label) else { return false };
            node = next;
            if consumed + 1 < total && !node.wildcard_rules.is_empty() {
                return true;
            }
        }
        false
    }

    /// Every rule whose wildcard covers `name` (one or more labels under the suffix).
    fn collect(&self, name: &str, out: &mut Vec<u32>) {
        let total = name.split('.').count();
        let mut node = self;
        for (consumed, label) in name.rsplit('.').enumerate() {
            let Some(next) = node.children.get(label) else { return };
            node = next;
            if consumed + 1 < total {
                out.extend_from_slice(&node.wildcard_rules);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_trie() {
        let mut t = LabelNode::default();
        t.insert("example.com", 0);
        t.insert("b.example.com", 1);
        t.insert("com", 2);
        let got = |name: &str| {
            let mut v = Vec::new();
            t.collect(name, &mut v);
            v
        };
        assert_eq!(got("a.example.com"), [2, 0]);
        assert_eq!(got("a.b.example.com"), [2, 0, 1]);
        assert_eq!(got("b.example.com"), [2, 0]);
        assert_eq!(got("example.com"), [2]);
        assert_eq!(got("com"), Vec::<u32>::new());
        assert_eq!(got("evilexample.com"), [2]);
        assert_eq!(got("example.net"), Vec::<u32>::new());
        for name in ["a.example.com", "a.b.example.com", "b.example.com", "example.com", "com", "evilexample.com", "x"]
        {
            assert_eq!(t.covers(name), !got(name).is_empty(), "{name}");
        }
    }
}
