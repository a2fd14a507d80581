//! rtvla — edge runtime of a distilled real-time vision-language-action driving model.
//!
//! Data flows one way: FrameSource (`camera`) → `preprocess` → Student (`model`) → `control` → `supervisor` →
//! VehicleLink (`vehicle`), run by the fixed-rate loop in `runtime`. `sim` is the closed-loop world the
//! `host-sim` board drives in. Architecture and contracts: `docs/ARCHITECTURE.md`.

pub mod alloc_counter;
pub mod board;
pub mod bundle;
pub mod camera;
pub mod clock;
pub mod control;
pub mod error;
pub mod events;
pub mod explain;
pub mod model;
pub mod net;
pub mod preprocess;
pub mod report;
pub mod runtime;
pub mod sim;
pub mod stats;
pub mod store;
pub mod supervisor;
pub mod tick_cost;
pub mod types;
pub mod vehicle;
pub mod wire;
