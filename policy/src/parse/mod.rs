//! The only readers of wire formats. Peer input (header bytes, properties) becomes typed
//! values with typed errors here and nowhere else: two readers of one format would be a parser
//! differential inside the product that exists to stop them.
//!
//! - [`host`]: authorities, hosts, SNIs and host patterns (one syntax for every section);
//! - [`ip`]: client addresses in `x-forwarded-for` and `Forwarded`;
//! - [`path`]: the canonical path rules match on;
//! - [`target`]: one pass over the request target noting every spelling parsers disagree on;
//! - [`token`]: RFC 9110 tokens, lists and quoted strings;
//! - [`spiffe`]: SPIFFE IDs and principal patterns;
//! - [`xfcc`]: `x-forwarded-client-cert` elements;
//! - [`cluster`]: Istio cluster names.

pub mod cluster;
pub mod host;
pub mod ip;
pub mod path;
pub mod spiffe;
pub mod target;
pub mod token;
pub mod xfcc;
