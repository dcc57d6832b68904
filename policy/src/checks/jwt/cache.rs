//! The per-VM verified-token cache.
//!
//! Keyed by the token's bytes through a fast non-cryptographic hash; the map compares whole
//! tokens on a hit, so a hash collision can never make one token pass for another. Only
//! tokens whose signature verified and that carry `exp` are stored, never beyond `exp` (plus
//! the skew); a hit still goes through the time, audience, rule-claim and binding checks.
//! It belongs to the compiled check, so a new policy starts with an empty cache.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::verify::Verified;

/// FxHash-style word-at-a-time hash: a 1 KiB token hashes in well under 100 ns. Only verified
/// tokens are inserted, so an attacker cannot flood a bucket.
#[derive(Default)]
pub struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(rest) {
                *w = *b;
            }
            self.add(u64::from_le_bytes(word));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Debug shows the size only: the keys are bearer tokens, which never reach a log.
#[derive(Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<Box<[u8]>, Arc<Verified>, BuildHasherDefault<WordHasher>>,
}

impl std::fmt::Debug for WordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WordHasher")
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("capacity", &self.capacity).field("entries", &self.entries.len()).finish()
    }
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::default() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verified token, unless it is absent or past `exp` + `skew` (then it is dropped).
    pub fn get(&mut self, token: &[u8], now: u64, skew: u64) -> Option<Arc<Verified>> {
        let hit = self.entries.get(token)?;
        if hit.exp.is_none_or(|exp| now >= exp.saturating_add(skew)) {
            self.entries.remove(token);
            return None;
        }
        Some(Arc::clone(hit))
    }

    /// Forget every token verified with `provider`'s keys (its key set changed).
    pub fn remove_provider(&mut self, provider: usize) {
        self.entries.retain(|_, v| v.provider != provider);
    }

    /// Remember a verified token. When full, expired entries go first, then the one that
    /// expires soonest.
    pub fn insert(&mut self, token: &[u8], verified: Arc<Verified>, now: u64, skew: u64) {
        let Some(exp) = verified.exp else { return };
        if self.capacity == 0 || now >= exp.saturating_add(skew) {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(token) {
            self.entries.retain(|_, v| v.exp.is_some_and(|e| now < e.saturating_add(skew)));
            if self.entries.len() >= self.capacity {
                let soonest = self.entries.iter().min_by_key(|(_, v)| v.exp).map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(token.into(), verified);
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn v(exp: Option<u64>) -> Arc<Verified> {
        Arc::new(Verified {
            provider: 0,
            kid: None,
            exp,
            nbf: None,
            iat: None,
            aud: vec![],
            claims: serde_json::Map::new(),
        })
    }

    #[test]
    fn bounded_and_never_past_exp() {
        let mut c = TokenCache::new(2);
        c.insert(b"a", v(Some(100)), 10, 5);
        c.insert(b"b", v(Some(200)), 10, 5);
        c.insert(b"c", v(Some(300)), 10, 5);
        assert_eq!(c.len(), 2);
        assert!(c.get(b"a", 10, 5).is_none(), "the soonest to expire was evicted");
        assert!(c.get(b"b", 10, 5).is_some());
        assert!(c.get(b"b", 204, 5).is_some());
        assert!(c.get(b"b", 205, 5).is_none(), "exp + skew reached");
        assert_eq!(c.len(), 1, "the expired entry was dropped");
        c.insert(b"x", v(None), 10, 5);
        c.insert(b"y", v(Some(50)), 60, 5);
        assert!(c.get(b"x", 10, 5).is_none() && c.get(b"y", 10, 5).is_none());
        let mut off = TokenCache::new(0);
        off.insert(b"a", v(Some(100)), 10, 5);
        assert!(off.is_empty());
    }

    #[test]
    fn a_prefix_or_suffix_is_another_token() {
        let mut c = TokenCache::new(8);
        c.insert(b"abcdefghij", v(Some(100)), 0, 0);
        assert!(c.get(b"abcdefghij", 0, 0).is_some());
        assert!(c.get(b"abcdefghi", 0, 0).is_none());
        assert!(c.get(b"abcdefghij\0", 0, 0).is_none());
    }
}
