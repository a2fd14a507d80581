//! A manifest's own integrity hash. The ONNX file's sha256 proves the graph; the manifest around it — input and
//! output contract, preprocessing mean/std, vocabulary — is just as much part of the model, and an edit there
//! (a wrong std, a reshaped output) would make a verified graph drive on garbage. The exporter
//! (`models/distill/export.py`) ends every manifest it writes with
//!
//! ```toml
//! [integrity]
//! manifest_sha256 = "<sha256 of every byte before the [integrity] line>"
//! ```
//!
//! and the runtime refuses a manifest whose bytes no longer match it. A hand-written manifest (the test fixture,
//! a user's own model) has no `[integrity]` table and is checked only by its contract.

use sha2::{Digest, Sha256};

/// The line that opens the integrity table; it must be the manifest's last table.
const HEADER: &str = "\n[integrity]\n";

/// Ok when the text carries no integrity table or its hash matches; otherwise why not.
pub fn check(text: &str) -> Result<(), String> {
    let Some(at) = text.find(HEADER) else { return Ok(()) };
    let (covered, table) = text.split_at(at + 1);
    let recorded = table
        .lines()
        .find_map(|l| l.trim().strip_prefix("manifest_sha256").map(|v| v.trim().trim_start_matches('=').trim()))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or("[integrity] has no manifest_sha256")?;
    let actual = hex::encode(Sha256::digest(covered.as_bytes()));
    if recorded.eq_ignore_ascii_case(&actual) {
        Ok(())
    } else {
        Err(format!(
            "manifest_sha256 mismatch: the manifest was edited after export (recorded {recorded}, now {actual})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(body: &str) -> String {
        format!("{body}\n[integrity]\nmanifest_sha256 = \"{}\"\n", hex::encode(Sha256::digest(format!("{body}\n"))))
    }

    #[test]
    fn a_sealed_manifest_passes_and_any_edit_fails() {
        let body = "[model]\nname = \"m\"\n\n[preprocess]\nmean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\n";
        let text = sealed(body);
        assert_eq!(check(&text), Ok(()));
        let edited = text.replace("std = [0.2, 0.2, 0.2]", "std = [0.3, 0.2, 0.2]");
        assert!(check(&edited).unwrap_err().contains("edited after export"));
        assert_eq!(check(body), Ok(()), "no integrity table: nothing to check");
        assert!(check(&format!("{body}\n[integrity]\n")).unwrap_err().contains("no manifest_sha256"));
    }

    #[test]
    fn every_bundled_manifest_is_sealed_and_intact() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                assert!(text.contains(HEADER), "{} carries no [integrity]", e.path().display());
                assert_eq!(check(&text), Ok(()), "{}", e.path().display());
                n += 1;
            }
        }
        assert!(n >= 7, "{n} manifests");
    }
}
