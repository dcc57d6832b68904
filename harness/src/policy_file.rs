//! Policy files as people write them: YAML or JSON on disk (or `-`, standard input), turned
//! into the JSON the filter receives as its plugin configuration.
//!
//! Stricter than a YAML or JSON parser alone: a key given twice is refused with its path (a
//! parser keeps the last one, so `mode: enforce` then `mode: dry-run` would silently become
//! dry-run), the top level must be a mapping, and every error that can be found is reported,
//! each as `FILE: PATH: message` in the policy's own vocabulary (never a Rust type name).

use std::path::Path;

use anyhow::Result;
use policy::ConfigError;

use crate::cli_io::{display_name, read_text};

/// Parse policy text (YAML or JSON) into a JSON value: syntax errors, duplicate keys and a
/// top level that is not a mapping are errors.
pub fn parse_document(text: &str) -> Result<serde_json::Value, Vec<ConfigError>> {
    let errs = if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        match policy::strict_json::check_json(text.as_bytes()) {
            Ok(()) => return Ok(value),
            Err(errs) => errs.0,
        }
    } else {
        let value: serde_json::Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => return Err(vec![ConfigError::new("", format!("not valid YAML or JSON: {e}"))]),
        };
        match policy::strict_json::duplicate_keys(serde_norway::Deserializer::from_str(text)) {
            Ok(errs) if errs.is_empty() => return Ok(value),
            Ok(errs) => errs.0,
            Err(e) => vec![ConfigError::new("", format!("not valid YAML: {e}"))],
        }
    };
    Err(errs)
}

/// [`parse_document`] with the errors as one message.
pub fn parse_value(text: &str) -> Result<serde_json::Value> {
    parse_document(text)
        .map_err(|errs| anyhow::anyhow!(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// Read a policy file (YAML, or JSON — JSON is YAML too; `-`: standard input) into a JSON
/// value. A signed policy (a DSSE envelope, `meshguard sign`) gives its policy, `serial` taken
/// out, **without verifying the signature** (`meshguard verify` does): what `check`, `eval`
/// and `replay` decide with is the policy the filter would run once the signature checks out.
/// Does not validate it as a policy: see [`load_policy`].
pub fn load_value(path: &Path) -> Result<serde_json::Value> {
    let value = load_raw_value(path)?;
    open_envelope(value).map_err(|e| crate::cli_io::bad_input(format!("{}: {e}", display_name(path))))
}

/// Read a policy file as it is: a policy, or a signed envelope as the envelope (what goes
/// into the plugin configuration).
pub fn load_raw_value(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path)?;
    let name = display_name(path);
    parse_document(&text)
        .map_err(|errs| crate::cli_io::bad_input(errs.iter().map(|e| line(&name, e)).collect::<Vec<_>>().join("\n")))
}

/// The policy inside a signed envelope (unverified), or the value itself when it is no envelope.
fn open_envelope(value: serde_json::Value) -> Result<serde_json::Value, String> {
    if !policy::envelope::is_envelope(&value) {
        return Ok(value);
    }
    policy::envelope::Envelope::from_value(&value)
        .and_then(|e| e.open_unverified())
        .map(|opened| opened.policy)
        .map_err(|e| e.to_string())
}

/// Read a policy file and return its compact JSON: what goes into the plugin configuration
/// (a signed envelope stays the envelope).
pub fn load_json(path: &Path) -> Result<String> {
    Ok(load_raw_value(path)?.to_string())
}

/// Read and compile a policy file; on failure the error lists every `FILE: PATH: message`.
pub fn load_policy(path: &Path) -> Result<policy::Policy, PolicyFileError> {
    load_policy_and_value(path).map(|(p, _)| p)
}

/// [`load_policy`], and the document as JSON (read once, so `-` works).
pub fn load_policy_and_value(path: &Path) -> Result<(policy::Policy, serde_json::Value), PolicyFileError> {
    load_policy_with_raw(path).map(|(p, v, _)| (p, v))
}

/// [`load_policy_and_value`], and the file's document as it is (a signed envelope stays the
/// envelope: what goes into the plugin configuration). Read once, so `-` works.
pub fn load_policy_with_raw(
    path: &Path,
) -> Result<(policy::Policy, serde_json::Value, serde_json::Value), PolicyFileError> {
    let file = display_name(path);
    let text = read_text(path).map_err(|e| PolicyFileError {
        file: file.clone(),
        errors: vec![ConfigError::new("", strip_name(&e, &file))],
    })?;
    let raw = parse_document(&text).map_err(|errors| PolicyFileError { file: file.clone(), errors })?;
    let value = open_envelope(raw.clone())
        .map_err(|e| PolicyFileError { file: file.clone(), errors: vec![ConfigError::new("", e)] })?;
    let policy = compile(value.clone()).map_err(|errors| PolicyFileError { file, errors })?;
    Ok((policy, value, raw))
}

fn strip_name(e: &anyhow::Error, file: &str) -> String {
    let msg = e.to_string();
    msg.strip_prefix(&format!("{file}: ")).map(str::to_string).unwrap_or(msg)
}

/// Compile a policy document, collecting every error that can be found: after a structural
/// error (a wrong type, an unknown field or value), the field at fault is set aside and the
/// rest is read again, so one typo does not hide the next.
pub fn compile(value: serde_json::Value) -> Result<policy::Policy, Vec<ConfigError>> {
    let first = match policy::Policy::from_value(value.clone()) {
        Ok(p) => return Ok(p),
        Err(errs) => errs,
    };
    let Some(structural) = first.iter().next().filter(|_| policy::document::parse(value.clone()).is_err()).cloned()
    else {
        // The document's shape is right: the compiler already reported every error.
        return Err(first.0.into_iter().map(in_vocabulary).collect());
    };
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut work = value;
    let mut current = structural;
    for _ in 0..64 {
        if let Some(field) = missing_field(&current.message) {
            let full = join_path(&current.path, field);
            if !removed.contains(&full) {
                errors.push(in_vocabulary(current));
            }
            return Err(errors);
        }
        let path = current.path.clone();
        errors.push(in_vocabulary(current));
        if !remove_at(&mut work, &path) {
            return Err(errors);
        }
        // What was set aside: the field, or the list holding the element.
        let mut aside = path.as_str();
        while aside.ends_with(']') {
            aside = aside.rfind('[').and_then(|i| aside.get(..i)).unwrap_or(aside);
        }
        removed.push(aside.to_string());
        match policy::document::parse(work.clone()) {
            Ok(_) => break,
            Err(errs) => match errs.0.into_iter().next() {
                Some(e) => current = e,
                None => return Err(errors),
            },
        }
    }
    // The rest now has the right shape: add what the compiler finds in it, except about
    // fields set aside (or what depends on them).
    if let Err(errs) = policy::Policy::from_value(work) {
        for e in errs.0 {
            let near_removed = removed
                .iter()
                .any(|r| e.path == *r || e.path.starts_with(&format!("{r}.")) || e.path.starts_with(&format!("{r}[")));
            if !near_removed {
                errors.push(in_vocabulary(e));
            }
        }
    }
    Err(errors)
}

fn join_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Remove the object field at `path` (`a.b[2].c`; for a list element `a.b[2]`, the list `a.b`);
/// false when there is no such field (the document itself).
fn remove_at(value: &mut serde_json::Value, path: &str) -> bool {
    let mut segments: Vec<Segment> = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            match index.trim_end_matches(']').parse() {
                Ok(i) => segments.push(Segment::Index(i)),
                Err(_) => return false,
            }
        }
    }
    // An element of a list: set the whole list aside.
    while matches!(segments.last(), Some(Segment::Index(_))) {
        segments.pop();
    }
    let Some(Segment::Key(last)) = segments.pop() else { return false };
    let mut node = value;
    for segment in segments {
        node = match (segment, node) {
            (Segment::Key(k), serde_json::Value::Object(map)) => match map.get_mut(&k) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Index(i), serde_json::Value::Array(items)) => match items.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    node.as_object_mut().is_some_and(|map| map.remove(&last).is_some())
}

enum Segment {
    Key(String),
    Index(usize),
}

/// serde's wording (`invalid type: string "x", expected struct IdentityDoc`, `expected u16`)
/// in the policy's vocabulary (`wrong type: string "x", expected a mapping`, `expected a whole
/// number from 0 to 65535`).
pub fn in_vocabulary(e: ConfigError) -> ConfigError {
    let mut m = e.message;
    for (rust, word) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number from 0"),
        ("expected usize", "expected a whole number from 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
        ("expected a tuple of size 2", "expected a list of two values"),
        ("invalid type: map", "wrong type: a mapping"),
        ("invalid type: sequence", "wrong type: a list"),
        ("invalid type: ", "wrong type: "),
        ("invalid value: ", "wrong value: "),
        ("unknown variant ", "unknown value "),
        ("missing field ", "missing required field "),
    ] {
        m = m.replace(rust, word);
    }
    for (rust, word) in
        [("expected struct ", "expected a mapping"), ("expected enum ", "expected one of the documented values")]
    {
        while let Some(i) = m.find(rust) {
            let after = i + rust.len();
            let end = m
                .get(after..)
                .and_then(|rest| rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
                .map_or(m.len(), |j| after + j);
            m.replace_range(i..end, word);
        }
    }
    ConfigError::new(e.path, m)
}

fn line(file: &str, e: &ConfigError) -> String {
    if e.path.is_empty() {
        format!("{file}: {}", e.message)
    } else {
        format!("{file}: {}: {}", e.path, e.message)
    }
}

/// Why a policy file was refused: every error, each shown as `FILE: PATH: message`.
#[derive(Debug)]
pub struct PolicyFileError {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(|e| line(&self.file, e)).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for PolicyFileError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match parse_document(yaml).and_then(compile) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn duplicates_in_yaml_and_json() {
        assert_eq!(
            errors("version: 1\nmode: enforce\nmode: dry-run\n"),
            ["mode: duplicate key: the field is given more than once"]
        );
        assert_eq!(errors(r#"{"version": 1, "mode": "enforce", "mode": "dry-run"}"#).len(), 1);
        assert_eq!(errors("[1]").len(), 1);
        assert_eq!(errors("- version: 1\n").len(), 1);
    }

    #[test]
    fn every_error_in_the_policys_words() {
        let errs = errors("version: 1\nmode: enforc\ndenyResponse: {status: 70000}\nidentity: 3\n");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains("struct") && !e.contains("u16")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("mode: unknown value `enforc`")), "{errs:?}");
        assert!(errs.iter().any(|e| e == "identity: wrong type: integer `3`, expected a mapping"), "{errs:?}");
    }
}
