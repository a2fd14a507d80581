//! The student stage: a driving policy that turns a preprocessed image + ego state into waypoints.

pub mod integrity;
pub mod manifest;
pub mod student;
pub mod tools;

use crate::types::{EgoState, Waypoints};

pub use manifest::{Manifest, Role};
pub use student::TractStudent;

/// Everything the driving branch sees in one tick.
pub struct PolicyInput<'a> {
    /// Normalised CHW image, exactly the model's input size.
    pub image: &'a [f32],
    pub ego: &'a EgoState,
    /// Simulator only: the privileged expert's targets (used by the expert policy, ignored by models).
    pub privileged: Option<&'a Waypoints>,
}

/// What one inference produced. Buffers are owned by the student and reused every tick.
#[derive(Debug, Clone)]
pub struct Inference {
    pub waypoints: Waypoints,
    /// Visual features [tokens × dims], row-major; empty when the model has none.
    pub features: Vec<f32>,
    pub feature_shape: [usize; 2],
}

/// A driving policy run once per tick (the tract student in production).
pub trait Student {
    /// Input image geometry (channels, height, width) the policy wants.
    fn image_shape(&self) -> [usize; 3];
    /// Run one inference. May allocate inside (tract does, per op); the caller measures it.
    fn infer(&mut self, input: &PolicyInput<'_>) -> anyhow::Result<&Inference>;
}
