// The drive in which the bundled student collides, shared by the two checks of the collision report: the store side
// (tests/collision_report.rs, `mod collision_common`) and the page in headless Chromium (xtask/src/report_check.rs,
// `include!`), so that a retrained model that passes this drive is mended in one place. Plain comments, not `//!`:
// an inner doc comment cannot be `include!`d.

/// A drive in which the student collides (found by `rtvla drive --scenario cut_in --seed S --fast` over seeds: the
/// bundle of 2026-12-02 hits the car cutting in at seeds 0, 4, 10, 17 and 20 of 0–30).
pub const SCENARIO: &str = "cut_in";
/// See [`SCENARIO`].
pub const SEED: u64 = 4;
