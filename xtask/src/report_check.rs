//! The explain report as a person sees it: a cut-in drive in which the bundled student hits the car cutting in,
//! `rtvla explain --html`, and a screenshot of that page by real headless Chromium (installed from Debian with
//! apt-get when `/usr/bin/chromium` is missing). Checks the page names the collision and its run, and that the
//! screenshot is a real, non-blank PNG of the requested size. `tests/collision_report.rs` checks the store side of
//! the same drive (both take it from tests/collision_common/mod.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

// `SCENARIO` and `SEED`: the drive in which the bundled student collides, one definition for this check and
// tests/collision_report.rs.
include!("../../tests/collision_common/mod.rs");
const CHROMIUM: &str = "/usr/bin/chromium";
const WINDOW: (u32, u32) = (1280, 2000);

/// Drive, explain, screenshot, check. Returns the screenshot's path (kept under the target dir to look at).
pub fn check(root: &Path, rtvla: &Path) -> Result<PathBuf> {
    super::step("explain report of a cut-in collision: HTML, screenshot by headless chromium");
    let out = super::target_dir(root).join("report-check");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let store = out.join("store");
    let seed = SEED.to_string();
    super::run(
        Command::new(rtvla)
            .current_dir(root)
            .args(["drive", "--quiet", "--fast", "--scenario", SCENARIO, "--seed", &seed, "--store"])
            .arg(&store),
    )?;
    let html = out.join("report.html");
    super::run(Command::new(rtvla).current_dir(root).arg("explain").arg(&store).arg("--html").arg(&html))?;
    let page = std::fs::read_to_string(&html).with_context(|| format!("reading {}", html.display()))?;
    for needle in ["class=\"collision\"", ">impact<", &format!("scenario {SCENARIO} / seed {SEED}"), "t = -0.50 s"] {
        if !page.contains(needle) {
            bail!("{}: the report lacks {needle:?}", html.display());
        }
    }
    let png = out.join("collision-report.png");
    screenshot(&html, &png, &out.join("chromium-profile"))?;
    check_png(&png)?;
    eprintln!("report check: {} ({} bytes), screenshot {}", html.display(), page.len(), png.display());
    Ok(png)
}

/// Install Debian's chromium with apt-get if it is missing (idempotent, through the xtask's one apt helper).
fn ensure_chromium() -> Result<()> {
    crate::cross::ensure_apt(&["chromium"])?;
    if !Path::new(CHROMIUM).exists() {
        bail!("apt-get installed chromium but {CHROMIUM} is missing");
    }
    Ok(())
}

/// Headless screenshot of `html` into `png`, with a fresh profile directory and no network chatter.
fn screenshot(html: &Path, png: &Path, profile: &Path) -> Result<()> {
    ensure_chromium()?;
    let html = html.canonicalize().with_context(|| format!("{}", html.display()))?;
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile)?;
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("file://{}", html.display()))
        .output()
        .with_context(|| format!("starting {CHROMIUM}"))?;
    if !out.status.success() || !png.exists() {
        bail!("chromium screenshot failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A PNG of the window's size whose compressed data is far beyond a blank page's (a white 1280×2000 page is a
/// few KiB; thumbnails and plots make tens).
fn check_png(png: &Path) -> Result<()> {
    let b = std::fs::read(png).with_context(|| format!("reading {}", png.display()))?;
    if b.len() < 33 || &b[..8] != b"\x89PNG\r\n\x1a\n" || &b[12..16] != b"IHDR" {
        bail!("{}: not a PNG", png.display());
    }
    let dim = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (w, h) = (dim(16), dim(20));
    if (w, h) != WINDOW {
        bail!("{}: {w}×{h}, expected {}×{}", png.display(), WINDOW.0, WINDOW.1);
    }
    if b.len() < 60 * 1024 {
        bail!("{}: only {} bytes: the page looks blank", png.display(), b.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The whole check, standalone: `cargo test -p xtask -- --ignored` after a release build of rtvla (`cargo xtask
    /// ci` runs it as a step; ignored here because it needs that binary and installs chromium).
    #[test]
    #[ignore = "needs target/release/rtvla and chromium; cargo xtask ci runs it"]
    fn collision_report_renders_in_chromium() {
        let root = super::super::project_root();
        let png = super::check(&root, &super::super::release_bin(&root)).unwrap();
        println!("screenshot: {}", png.display());
    }
}
