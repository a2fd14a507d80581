//! Which language branch explains a store: the one trained on the features of the driving model that wrote it.
//!
//! Snapshots name their driving graph (`Snapshot::model_id`, a sha256 prefix) and language manifests list the
//! graphs whose features they read (`[io] features_from`), so `rtvla explain DIR` needs no `--model`: it looks
//! through the bundle (see [`crate::bundle`]) on a host or a deployed device and takes the first branch that
//! reads every model id in the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::language::{is_language_manifest, LanguageManifest};
use crate::error::bad_input;

/// The distinct driving-model ids (hex) of the store's snapshots; schema-1 snapshots name none.
pub fn store_model_ids(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    crate::store::export::for_each_snapshot(
        dir,
        |_, s| {
            ids.extend(s.model_id_hex());
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(ids)
}

/// The bundled language branch for the store in `dir`.
pub fn language_for_store(dir: &Path) -> anyhow::Result<PathBuf> {
    let ids = store_model_ids(dir)?;
    let candidates: Vec<LanguageManifest> = crate::bundle::model_manifests()
        .iter()
        .filter(|p| is_language_manifest(p))
        .filter_map(|p| LanguageManifest::load(p).ok())
        .collect();
    choose(&ids, &candidates)
}

/// The first candidate that reads every id; with no ids (an empty store or old snapshots), the first candidate.
fn choose(ids: &BTreeSet<String>, candidates: &[LanguageManifest]) -> anyhow::Result<PathBuf> {
    let reads_all = |m: &&LanguageManifest| ids.iter().all(|id| m.io.foreign_features(Some(id)).is_none());
    if let Some(m) = candidates.iter().find(reads_all) {
        return Ok(m.path.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|m| m.path.display().to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(|s| &s[..s.len().min(16)]).collect();
    Err(bad_input(format!(
        "no bundled language branch reads the features of driving model {} (looked at: {}); pass --model MANIFEST",
        ids.join(", "),
        if looked.is_empty() { "none found".to_string() } else { looked.join(", ") }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(name: &str) -> LanguageManifest {
        LanguageManifest::load(&crate::bundle::find(&format!("models/student/{name}")).unwrap()).unwrap()
    }

    #[test]
    fn picks_the_branch_that_reads_the_snapshots_model() {
        let ours = bundled("language.toml");
        let ablation = bundled("language_nodistill.toml");
        let candidates = [ours.clone(), ablation.clone()];
        for m in [&ours, &ablation] {
            let id: BTreeSet<String> = m.io.features_from.iter().take(1).map(|h| h[..16].to_string()).collect();
            assert_eq!(choose(&id, &candidates).unwrap(), m.path, "model {id:?}");
        }
        assert_eq!(choose(&BTreeSet::new(), &candidates).unwrap(), ours.path, "no ids: the first");
        let stranger: BTreeSet<String> = ["0123456789abcdef".to_string()].into();
        let e = choose(&stranger, &candidates).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("0123456789abcdef") && e.to_string().contains("language_nodistill"), "{e}");
    }
}
