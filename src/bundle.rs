//! Where the bundled files live — board profiles (`boards/`) and models (`models/`) — so that `rtvla` works from any
//! directory: found relative to an explicit override, the executable or an install prefix, never the current
//! directory.
//!
//! Search order (first root that holds the file wins):
//! 1. `$RTVLA_HOME` — an explicit bundle directory (holds `boards/` and `models/`);
//! 2. the executable's own directory — a deployed release (`releases/<version>/` holds the binary beside its
//!    board profile and models);
//! 3. `<exe>/../share/rtvla` — an install prefix (`cargo xtask install` puts the binary in `PREFIX/bin` and the
//!    bundle in `PREFIX/share/rtvla`);
//! 4. the source checkout the binary was built from — `cargo run` and `cargo install --path .`, as long as that
//!    checkout still exists.
//!
//! A path the user gives explicitly is used as given (relative to the current directory, as any CLI does); only
//! defaults and bare names (`--board raspberry-pi-5`) are looked up here.

use std::path::{Path, PathBuf};

use crate::error::bad_input;

/// Environment variable naming the bundle directory.
pub const ENV_HOME: &str = "RTVLA_HOME";

/// One place a bundle may be, and why it is searched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    pub why: &'static str,
}

/// The candidate bundle roots, in search order (see the module doc).
pub fn roots() -> Vec<Root> {
    let mut out = Vec::new();
    if let Some(home) = std::env::var_os(ENV_HOME).filter(|h| !h.is_empty()) {
        out.push(Root { dir: PathBuf::from(home), why: "$RTVLA_HOME" });
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(Root { dir: exe_dir.clone(), why: "beside the executable" });
        out.push(Root { dir: exe_dir.join("..").join("share").join("rtvla"), why: "install prefix" });
    }
    out.push(Root { dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")), why: "source checkout" });
    out
}

/// The first existing `rel` under `roots`, or a bad-input error that lists every place it looked.
pub fn find_in(roots: &[Root], rel: &str) -> anyhow::Result<PathBuf> {
    for r in roots {
        let p = r.dir.join(rel);
        if p.is_file() {
            return Ok(p);
        }
    }
    let looked: Vec<String> = roots.iter().map(|r| format!("{} ({})", r.dir.join(rel).display(), r.why)).collect();
    Err(bad_input(format!(
        "cannot find the bundled {rel}: looked in {}; set {ENV_HOME} to the directory holding boards/ and models/",
        looked.join(", ")
    )))
}

/// A bundled file by its path inside the bundle, e.g. `boards/host-sim.toml`.
pub fn find(rel: &str) -> anyhow::Result<PathBuf> {
    find_in(&roots(), rel)
}

/// Every `models/*/*.toml` in every root, for callers that pick a manifest by content (e.g. `explain` picks the
/// language branch that reads a snapshot's features). Earlier roots first; duplicates by relative path skipped.
pub fn model_manifests() -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in roots() {
        let Ok(dirs) = std::fs::read_dir(r.dir.join("models")) else { continue };
        let mut files: Vec<PathBuf> = dirs
            .flatten()
            .filter(|d| d.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(&r.dir).map(Path::to_path_buf).unwrap_or_else(|_| f.clone());
            if seen.insert(rel) {
                out.push(f);
            }
        }
    }
    out
}

/// A board given on the command line: an existing path as given, else a bare name (`raspberry-pi-5`,
/// `host-sim.toml`) looked up as `boards/<name>.toml` in the bundle.
pub fn board(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(arg) = arg else { return find("boards/host-sim.toml") };
    if arg.exists() || arg.components().count() > 1 {
        return Ok(arg.to_path_buf());
    }
    let name = arg.to_string_lossy();
    let file = if name.ends_with(".toml") { name.to_string() } else { format!("{name}.toml") };
    find(&format!("boards/{file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_root_holding_the_file_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("boards")).unwrap();
        std::fs::write(b.path().join("boards/x.toml"), "").unwrap();
        let roots = vec![Root { dir: a.path().into(), why: "first" }, Root { dir: b.path().into(), why: "second" }];
        assert_eq!(find_in(&roots, "boards/x.toml").unwrap(), b.path().join("boards/x.toml"));
        std::fs::create_dir_all(a.path().join("boards")).unwrap();
        std::fs::write(a.path().join("boards/x.toml"), "").unwrap();
        assert_eq!(find_in(&roots, "boards/x.toml").unwrap(), a.path().join("boards/x.toml"));
    }

    #[test]
    fn a_missing_default_says_where_it_looked() {
        let a = tempfile::tempdir().unwrap();
        let roots = vec![Root { dir: a.path().into(), why: "$RTVLA_HOME" }];
        let e = find_in(&roots, "boards/nope.toml").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        let msg = e.to_string();
        assert!(msg.contains(&a.path().join("boards/nope.toml").display().to_string()), "{msg}");
        assert!(msg.contains("$RTVLA_HOME") && msg.contains(ENV_HOME), "{msg}");
    }

    #[test]
    fn the_checkout_bundle_is_found_from_any_directory() {
        // The last root is this crate's checkout, which holds the default board and the bundled student.
        let p = find("boards/host-sim.toml").unwrap();
        assert!(p.is_absolute(), "{}", p.display());
        assert!(model_manifests().iter().any(|m| m.ends_with("models/student/language.toml")));
        assert_eq!(board(Some(Path::new("host-sim"))).unwrap(), p);
    }
}
