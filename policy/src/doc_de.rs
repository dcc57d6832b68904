//! Deserializing the policy document from a [`serde_json::Value`], naming the JSON path of the
//! first structural error (`identity.rules[0].action`), as `serde_path_to_error` did.
//!
//! Why not `serde_path_to_error`: it wraps the deserializer, every map and sequence access and
//! every visitor in a tracking layer that is generic over the layer beneath, so each document
//! type's `Deserialize` impl was instantiated several times over (~230 KB of meshguard.wasm,
//! code that runs once per configuration). This deserializer is one concrete type: each
//! document type is instantiated once, and the path is a stack of segments kept outside the
//! generic code. The paths are the same: an error names the innermost value it happened in
//! (a wrong type or value: that value; an unknown field: the field; a missing field: the
//! object); the messages are `serde_json::Value`'s own.

use std::cell::RefCell;

use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Unexpected, Visitor};
use serde_json::{Map, Value};

type Error = serde_json::Error;

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path walked so far, and the path of the first (innermost) error once there is one.
#[derive(Default)]
struct Track<'a> {
    stack: RefCell<Vec<Segment<'a>>>,
    failed_at: RefCell<Option<String>>,
}

impl<'a> Track<'a> {
    /// Run `f` one segment deeper; an error it returns is located there unless a deeper
    /// one already was.
    fn within<T>(&self, seg: Segment<'a>, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.enter(seg);
        let out = f();
        self.leave(out.is_err());
        out
    }

    // Out of line: `within` is instantiated for every document type, these are not.
    #[inline(never)]
    fn enter(&self, seg: Segment<'a>) {
        self.stack.borrow_mut().push(seg);
    }

    #[inline(never)]
    fn leave(&self, failed: bool) {
        if failed {
            self.fail();
        }
        self.stack.borrow_mut().pop();
    }

    /// Locate an error at the current path (unless a deeper one already was).
    fn fail(&self) {
        let mut failed = self.failed_at.borrow_mut();
        if failed.is_none() {
            let mut path = String::new();
            for seg in self.stack.borrow().iter() {
                match seg {
                    Segment::Key(k) => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(k);
                    }
                    Segment::Index(i) => {
                        path.push('[');
                        path.push_str(&i.to_string());
                        path.push(']');
                    }
                }
            }
            *failed = Some(path);
        }
    }
}

/// Deserialize `T` from `value`; on error, the JSON path of the value at fault ("" for the
/// document itself) and the error.
pub(crate) fn from_value<'a, T: de::Deserialize<'a>>(value: &'a Value) -> Result<T, (String, Error)> {
    let track = Track::default();
    let out = T::deserialize(De { v: value, track: &track });
    out.map_err(|e| {
        track.fail();
        (track.failed_at.into_inner().unwrap_or_default(), e)
    })
}

#[derive(Clone, Copy)]
struct De<'a, 't> {
    v: &'a Value,
    track: &'t Track<'a>,
}

/// As `serde_json::Value` reports a value of the wrong type.
#[inline(never)]
fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// A sequence or map with elements left over, as `serde_json::Value` reports it.
#[inline(never)]
fn fewer(len: usize, expected: &'static str) -> Error {
    Error::invalid_length(len, &expected)
}

impl<'a, 't> De<'a, 't> {
    fn visit_array<V: Visitor<'a>>(self, a: &'a [Value], visitor: V) -> Result<V::Value, Error> {
        let mut seq = Seq { it: a.iter(), index: 0, track: self.track };
        let out = visitor.visit_seq(&mut seq)?;
        if seq.it.len() == 0 {
            Ok(out)
        } else {
            Err(fewer(a.len(), "fewer elements in array"))
        }
    }

    fn visit_object<V: Visitor<'a>>(self, m: &'a Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
        let mut map = MapAcc { it: m.iter(), value: None, track: self.track };
        let out = visitor.visit_map(&mut map)?;
        if map.it.len() == 0 {
            Ok(out)
        } else {
            Err(fewer(m.len(), "fewer elements in map"))
        }
    }
}

impl<'a> de::Deserializer<'a> for De<'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => de::Deserializer::deserialize_any(n, visitor),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(a) => self.visit_array(a, visitor),
            Value::Object(m) => self.visit_object(m, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.v {
            // A unit variant: what the document types have.
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // `{variant: content}`: serde_json's own enum access (the path stops at the
            // variant, as it did).
            Value::Object(m) => {
                let out = de::Deserializer::deserialize_enum(self.v, "", variants, visitor);
                match (&out, m.iter().next()) {
                    (Err(_), Some((k, _))) if m.len() == 1 && variants.contains(&k.as_str()) => {
                        self.track.within(Segment::Key(k), || out)
                    }
                    _ => out,
                }
            }
            other => Err(Error::invalid_type(unexpected(other), &"string or map")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    // As `serde_json::Value` does: each kind of value only where it is the one asked for (a
    // visitor may accept more, e.g. a JSON map from `null`, which the Value refuses).
    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Bool(b) => visitor.visit_bool(*b),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_u64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Number(n) => de::Deserializer::deserialize_any(n, visitor),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::String(s) => visitor.visit_borrowed_str(s),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(a) => self.visit_array(a, visitor),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Null => visitor.visit_unit(),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Array(a) => self.visit_array(a, visitor),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Object(m) => self.visit_object(m, visitor),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.v {
            Value::Array(a) => self.visit_array(a, visitor),
            Value::Object(m) => self.visit_object(m, visitor),
            other => Err(Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_i8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_unit_struct<V: Visitor<'a>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_tuple<V: Visitor<'a>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
}

struct Seq<'a, 't> {
    it: std::slice::Iter<'a, Value>,
    index: usize,
    track: &'t Track<'a>,
}

impl<'a> de::SeqAccess<'a> for Seq<'a, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(v) = self.it.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        let track = self.track;
        track.within(Segment::Index(index), || seed.deserialize(De { v, track }).map(Some))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

struct MapAcc<'a, 't> {
    it: serde_json::map::Iter<'a>,
    value: Option<(&'a str, &'a Value)>,
    track: &'t Track<'a>,
}

impl<'a> de::MapAccess<'a> for MapAcc<'a, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.it.next() else { return Ok(None) };
        self.value = Some((k, v));
        let key = de::value::BorrowedStrDeserializer::<Error>::new(k);
        self.track.within(Segment::Key(k), || seed.deserialize(key).map(Some))
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((k, v)) = self.value.take() else { return Err(Error::custom("value is missing")) };
        let track = self.track;
        track.within(Segment::Key(k), || seed.deserialize(De { v, track }))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::document::PolicyDocument;

    /// A document with every section, most fields set.
    fn full() -> Value {
        json!({
            "version": 1, "mode": "enforce",
            "denyResponse": {"status": 403, "message": "access denied", "includeReasonCode": true},
            "decisionLog": {"allowSampleRate": 0.5, "redactHeaders": ["x-api-key"], "includeHeaders": true},
            "hygiene": {"preset": "sidecar", "mode": "dry-run", "guards": {"doubleSlash": {"action": "reject"}}},
            "identity": {
                "mode": "enforce", "requirePeerIdentity": true, "trustDomains": ["cluster.local"],
                "source": "peerCertificate", "appliesTo": "inbound", "defaultAction": "allow",
                "rules": [{"id": "web-reads-api", "action": "allow",
                           "match": {"hosts": ["api.default.svc"], "paths": [{"prefix": "/v1/"}], "methods": ["GET"]},
                           "principals": ["spiffe://cluster.local/ns/web/sa/*"]}]
            },
            "egress": {
                "mode": "enforce", "appliesTo": "outbound", "sourceIdentity": "workload", "trustDomain": "cluster.local",
                "credentials": {"default": "deny", "headers": ["x-partner-key"]},
                "allow": [{"id": "payments", "hosts": ["api.stripe.com", "*.stripe.com"], "ports": [443],
                           "methods": ["GET", "POST"], "paths": [{"prefix": "/v1/"}],
                           "sources": ["spiffe://cluster.local/ns/payments/sa/*"], "credentials": "strip"}]
            },
            "jwt": {
                "mode": "enforce", "defaultAction": "allow", "stripToken": true, "denyStatus": 401,
                "forwardClaims": [{"claim": "sub", "header": "x-jwt-sub"}],
                "providers": [{"id": "idp", "issuer": "https://idp.example.com", "audiences": ["api"],
                               "algorithms": ["RS256"],
                               "jwks": {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "e": "AQAB", "n": "AQAB"}]}}],
                "rules": [{"id": "api", "mode": "dry-run", "match": {"paths": [{"prefix": "/api"}]},
                           "require": {"providers": ["idp"]}, "bind": {"certificate": "required"},
                           "claims": [{"name": "scope", "contains": "items:read"}]}]
            },
            "upstream": {
                "mode": "enforce",
                "destinations": [{"id": "payments", "clusters": ["outbound|8080||payments.prod.svc.cluster.local"],
                                  "hosts": ["payments.prod.svc.cluster.local"],
                                  "identities": ["spiffe://cluster.local/ns/prod/sa/payments"], "requireMtls": true}]
            }
        })
    }

    /// Every document one edit away from `v`: each value replaced by one of another type, each
    /// object with a key more and each of its keys less, each array with an element less.
    fn mutations(v: &Value, out: &mut Vec<Value>, rebuild: &dyn Fn(Value) -> Value) {
        let others = [
            json!("x"),
            json!(7),
            json!(-3),
            json!(1.5),
            json!(70000),
            json!(true),
            json!(null),
            json!([]),
            json!([1]),
            json!({}),
            json!({"bogus": 1}),
            json!("dry-run"),
            json!({"enforce": null}),
            json!({"enforce": 1}),
            json!([[]]),
            json!({"id": "x"}),
        ];
        for o in others {
            out.push(rebuild(o));
        }
        match v {
            Value::Object(m) => {
                let mut more = m.clone();
                more.insert("bogus".into(), json!(1));
                out.push(rebuild(Value::Object(more)));
                for k in m.keys() {
                    let mut less = m.clone();
                    less.remove(k);
                    out.push(rebuild(Value::Object(less)));
                    let child = |c: Value| {
                        let mut m = m.clone();
                        m.insert(k.clone(), c);
                        rebuild(Value::Object(m))
                    };
                    mutations(&m[k], out, &child);
                }
            }
            Value::Array(a) => {
                out.push(rebuild(Value::Array(a[1..].to_vec())));
                for i in 0..a.len() {
                    let child = |c: Value| {
                        let mut a = a.clone();
                        a[i] = c;
                        rebuild(Value::Array(a))
                    };
                    mutations(&a[i], out, &child);
                }
            }
            _ => {}
        }
    }

    /// The same outcome as `serde_path_to_error` (which this replaces): the same document, or
    /// the same JSON path and message, on thousands of near-miss documents.
    #[test]
    fn same_paths_and_messages_as_serde_path_to_error() {
        let mut docs = vec![full()];
        mutations(&full(), &mut docs, &|v| v);
        assert!(docs.len() > 1000, "{}", docs.len());
        let mut errors = 0;
        for doc in &docs {
            let theirs = serde_path_to_error::deserialize::<_, PolicyDocument>(doc.clone()).map_err(|e| {
                let path = e.path().to_string();
                (if path == "." { String::new() } else { path }, e.into_inner().to_string())
            });
            let ours = super::from_value::<PolicyDocument>(doc).map_err(|(p, e)| (p, e.to_string()));
            match (theirs, ours) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{doc}"),
                (Err(a), Err(b)) => {
                    errors += 1;
                    assert_eq!(a, b, "{doc}");
                }
                (a, b) => panic!("{doc}: serde_path_to_error {a:?}, ours {b:?}"),
            }
        }
        assert!(errors > 500, "{errors} of {} documents refused", docs.len());
    }
}
