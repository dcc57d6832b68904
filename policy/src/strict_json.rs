//! Strict reading of a policy document: duplicate keys and a top level that is not an object.
//!
//! Threat: a policy that says two things. JSON and YAML parsers keep the last of two equal keys,
//! so `mode: enforce` followed by `mode: dry-run` silently becomes dry-run, and a reviewer who
//! reads the first key approves a policy the filter never runs. Duplicates are refused, each
//! named by its path, before the document is compiled.
//!
//! [`duplicate_keys`] works on any serde `Deserializer` (the command line runs it on YAML too);
//! [`check_json`] is the filter's entry point for the plugin configuration's JSON bytes.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ConfigErrors;

/// Nesting deeper than this is refused (a policy is a handful of levels deep; the limit keeps
/// the walk's recursion bounded on hostile input).
const MAX_DEPTH: usize = 64;

/// Every duplicate key in the document `d` reads, as `(path, message)`; also an error when
/// the top level is not an object. `Err` only when `d` itself fails (syntax errors).
pub fn duplicate_keys<'de, D: Deserializer<'de>>(d: D) -> Result<ConfigErrors, D::Error> {
    let mut errs = ConfigErrors::default();
    let top = Walk { path: String::new(), depth: 0, errs: &mut errs }.deserialize(d)?;
    if top != Kind::Object {
        errs.push("", format!("a policy is a mapping (an object) of fields such as `version`, not {}", top.name()));
    }
    Ok(errs)
}

/// [`duplicate_keys`] over JSON bytes; a syntax error is reported as one error at the top.
pub fn check_json(bytes: &[u8]) -> Result<(), ConfigErrors> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let errs = match duplicate_keys(&mut de) {
        Ok(errs) => errs,
        Err(e) => {
            let mut errs = ConfigErrors::default();
            errs.push("", format!("not valid JSON: {e}"));
            errs
        }
    };
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    Scalar,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Object => "a mapping",
            Kind::Array => "a list",
            Kind::Scalar => "a single value",
        }
    }
}

struct Walk<'e> {
    path: String,
    depth: usize,
    errs: &'e mut ConfigErrors,
}

impl Walk<'_> {
    fn child(&mut self, path: String) -> Walk<'_> {
        Walk { path, depth: self.depth + 1, errs: self.errs }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

/// A key, whatever its type (YAML allows numbers and booleans as keys), as text.
struct Key(String);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_string()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a policy document")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Kind, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq.next_element_seed(self.child(path))?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(Kind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Kind, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let mut seen = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                self.errs.push(path.clone(), "duplicate key: the field is given more than once");
            }
            map.next_value_seed(self.child(path))?;
        }
        Ok(Kind::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(json: &str) -> Vec<String> {
        match check_json(json.as_bytes()) {
            Ok(()) => Vec::new(),
            Err(errs) => errs.iter().map(|e| e.path.clone()).collect(),
        }
    }

    #[test]
    fn duplicates_are_named_by_path() {
        assert!(paths(r#"{"version":1,"mode":"enforce"}"#).is_empty());
        assert_eq!(paths(r#"{"version":1,"mode":"enforce","mode":"dry-run"}"#), ["mode"]);
        assert_eq!(
            paths(r#"{"version":1,"identity":{"rules":[{"id":"a"},{"id":"b","id":"c"}]}}"#),
            ["identity.rules[1].id"]
        );
        // The same key in two different objects is fine.
        assert!(paths(r#"{"a":{"x":1},"b":{"x":1}}"#).is_empty());
    }

    #[test]
    fn the_top_level_is_an_object() {
        assert_eq!(paths("[1]"), [""]);
        assert_eq!(paths("1"), [""]);
        assert_eq!(paths("not json"), [""]);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert_eq!(paths(&deep), [""]);
    }
}
