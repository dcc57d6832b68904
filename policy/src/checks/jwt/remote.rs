//! Remote JWKS (`jwks.remote`): the key set of a provider fetched at run time.
//!
//! The policy does no I/O: the filter's root context fetches each provider's JWKS through an
//! Envoy cluster (on start and every `refreshSeconds`) and hands the body to
//! [`crate::Policy::set_jwks`]. The body is read with the same key reader as inline keys
//! ([`super::keys::parse_jwks_json`]: `kty: oct`, private members, weak RSA, off-curve points
//! are refused), so a fetched key set that is not valid as a whole is a failed fetch and the
//! last good one stays. Until a first good fetch, tokens of the provider are denied with
//! `jwt_keys_unavailable` (fail closed).
//!
//! A key set that changes empties the verified-token cache entries of that provider, so a
//! token verified under a key that the rotation removed is verified again (and denied).

use std::cell::RefCell;
use std::sync::Arc;

use super::keys::{parse_jwks_json, Jwk};

/// A fetched JWKS larger than this is a failed fetch (the filter reads no more than this).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A provider whose keys are fetched: what the filter needs to fetch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The provider's `id` (what [`crate::Policy::set_jwks`] takes).
    pub provider: String,
    /// The Envoy cluster the JWKS is fetched through.
    pub cluster: String,
    /// The request path (`/.well-known/jwks.json`).
    pub path: String,
    /// The `:authority` of the fetch: `jwks.remote.authority`, else the host of an Istio
    /// cluster name (`outbound|443||idp.example.com` → `idp.example.com`), else the cluster
    /// name itself.
    pub authority: String,
    pub refresh_seconds: u64,
}

/// What a successful [`crate::Policy::set_jwks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksUpdate {
    /// The key set is new or changed (the provider's cached tokens were dropped).
    Changed,
    /// The same bytes as the key set in force: nothing changed.
    Unchanged,
}

#[derive(Debug)]
struct Fetched {
    /// The body as fetched, to tell an unchanged key set from a rotation and to carry the keys
    /// over to a new configuration with the same source.
    body: Arc<[u8]>,
    keys: Arc<Vec<Jwk>>,
}

/// A compiled provider's remote source and the last good key set fetched from it.
#[derive(Debug)]
pub struct RemoteKeys {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_seconds: u64,
    fetched: RefCell<Option<Fetched>>,
}

/// The host part of an Istio cluster name (`outbound|443||idp.example.com`), else the name.
pub fn authority_of_cluster(cluster: &str) -> &str {
    match cluster.rsplit_once('|') {
        Some((_, host)) if !host.is_empty() => host,
        _ => cluster,
    }
}

impl RemoteKeys {
    pub fn new(cluster: &str, path: &str, authority: Option<&str>, refresh_seconds: u64) -> Self {
        Self {
            cluster: cluster.to_string(),
            path: path.to_string(),
            authority: authority.unwrap_or_else(|| authority_of_cluster(cluster)).to_string(),
            refresh_seconds,
            fetched: RefCell::new(None),
        }
    }

    /// The key set in force, `None` before the first good fetch.
    pub fn keys(&self) -> Option<Arc<Vec<Jwk>>> {
        self.fetched.try_borrow().ok()?.as_ref().map(|f| Arc::clone(&f.keys))
    }

    /// The body of the key set in force.
    pub fn body(&self) -> Option<Arc<[u8]>> {
        self.fetched.try_borrow().ok()?.as_ref().map(|f| Arc::clone(&f.body))
    }

    /// Install a fetched JWKS; on any error the key set in force stays. The error names what
    /// was wrong (JSON paths under `jwks`), never key material.
    pub fn set(&self, body: &[u8]) -> Result<JwksUpdate, String> {
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        if self.fetched.try_borrow().ok().and_then(|f| f.as_ref().map(|f| &*f.body == body)).unwrap_or(false) {
            return Ok(JwksUpdate::Unchanged);
        }
        let keys = parse_jwks_json(body, "jwks").map_err(|errs| {
            let all: Vec<String> = errs.iter().take(3).map(|e| e.to_string()).collect();
            all.join("; ")
        })?;
        let mut slot = self.fetched.try_borrow_mut().map_err(|_| "key set busy".to_string())?;
        *slot = Some(Fetched { body: Arc::from(body), keys: Arc::new(keys) });
        Ok(JwksUpdate::Changed)
    }
}
