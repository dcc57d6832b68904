//! Every shared test vector (policy/vectors/*.json) decides as recorded. With
//! `MESHGUARD_BLESS=1` the expectations are rewritten from the current decisions instead, for a
//! person to review in the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use policy::vectors::{decide, mismatches, VectorFile};

#[test]
fn every_vector_decides_as_recorded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let bless = std::env::var_os("MESHGUARD_BLESS").is_some();
    let mut files = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file: VectorFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
        cases += file.cases.len();
        if bless {
            bless_file(&path, &text, &file);
            continue;
        }
        for (name, got) in mismatches(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            failures.push(format!("{}: {name}: got {got}", path.display()));
        }
    }
    assert!(files >= 3 && cases >= 30, "only {files} files and {cases} cases found in {}", dir.display());
    assert!(failures.is_empty(), "{} cases decide differently:\n{}", failures.len(), failures.join("\n"));
}

/// Rewrite `expect` of every case from the current decision, keeping everything else.
fn bless_file(path: &Path, text: &str, file: &VectorFile) {
    let policy = policy::Policy::from_value(file.policy.clone()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(text).unwrap();
    for (case, raw) in file.cases.iter().zip(doc["cases"].as_array_mut().unwrap()) {
        raw["expect"] = decide(&policy, &case.request);
    }
    let mut out = String::from("{\n");
    out.push_str(&format!("  \"description\": {},\n", doc["description"]));
    out.push_str(&format!("  \"policy\": {},\n", doc["policy"]));
    out.push_str("  \"cases\": [\n");
    let cases = doc["cases"].as_array().unwrap();
    for (i, c) in cases.iter().enumerate() {
        let comma = if i + 1 < cases.len() { "," } else { "" };
        out.push_str(&format!("    {c}{comma}\n"));
    }
    out.push_str("  ]\n}\n");
    std::fs::write(path, out).unwrap();
}
