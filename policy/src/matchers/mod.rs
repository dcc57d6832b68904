//! Compiled matchers, built once per policy and only walked per request: routes (host,
//! canonical path, method), principal sets, and the host label trie. Every matcher has a
//! bounded worst case per request.

pub mod hosts;
pub mod principals;
pub mod route;
