//! `cargo xtask install [--prefix DIR]`: the release binary in `PREFIX/bin` and its bundle (board profiles, the
//! bundled models with their manifests and parity vectors) in `PREFIX/share/rtvla`, where `rtvla` looks for them
//! (src/bundle.rs). The installed binary then works from any directory, and without the checkout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{cargo, release_bin, run, step};

/// Files of the bundle a runtime needs (training checkpoints and Python stay in the checkout).
fn is_bundle_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".toml") || name.ends_with(".onnx") || name.ends_with(".parity.json")
}

/// `$HOME/.local`, the XDG user prefix (its `bin` is on PATH in most desktop and server shells).
pub fn default_prefix() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: pass --prefix DIR")?;
    Ok(PathBuf::from(home).join(".local"))
}

pub fn install(root: &Path, prefix: &Path) -> Result<()> {
    step("build the release binary");
    run(cargo().args(["build", "--release", "--package", "rtvla", "--bin", "rtvla"]))?;
    let bin_dir = prefix.join("bin");
    let share = prefix.join("share").join("rtvla");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    step(&format!("install into {}", prefix.display()));
    // Replace the binary by rename, so a running rtvla keeps its old inode.
    let tmp = bin_dir.join(".rtvla.new");
    std::fs::copy(release_bin(root), &tmp).with_context(|| format!("copying the binary to {}", tmp.display()))?;
    std::fs::rename(&tmp, bin_dir.join("rtvla"))?;
    let _ = std::fs::remove_dir_all(&share);
    let mut files = copy_tree(&root.join("boards"), &share.join("boards"))?;
    for sub in ["student", "fixture"] {
        files += copy_tree(&root.join("models").join(sub), &share.join("models").join(sub))?;
    }
    eprintln!("installed {} and {files} bundle files in {}", bin_dir.join("rtvla").display(), share.display());
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin_dir));
    if !on_path {
        eprintln!(
            "note: {} is not on PATH; add it, e.g. export PATH=\"{}:$PATH\"",
            bin_dir.display(),
            bin_dir.display()
        );
    }
    Ok(())
}

/// Copy the bundle files of `from` (one level: profiles and model directories are flat) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<usize> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let p = entry?.path();
        if p.is_file() && is_bundle_file(&p) {
            std::fs::copy(&p, to.join(p.file_name().expect("a file has a name")))
                .with_context(|| format!("copying {}", p.display()))?;
            n += 1;
        }
    }
    Ok(n)
}
