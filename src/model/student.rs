//! The tract student: the ONNX model built and optimised once at start-up, run every tick.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tract_onnx::prelude::*;

use super::manifest::{Manifest, Role, TensorSpec};
use super::{Inference, PolicyInput, Student};
use crate::error::bad_input;
use crate::types::{Waypoints, PATH_POINTS, SPEED_POINTS};

type Plan = TypedSimplePlan;

/// The student network running on tract.
pub struct TractStudent {
    manifest: Manifest,
    state: TypedSimpleState,
    image_shape: [usize; 3],
    /// Index of each output in tract's output list.
    out_path: usize,
    out_speed: usize,
    out_features: Option<usize>,
    /// Graph input order: positions of image / speed / target points.
    input_order: [Role; 3],
    result: Inference,
}

impl TractStudent {
    /// Load, verify and optimise a student from its manifest. Every mismatch is `BadInput`.
    pub fn load(manifest_path: &Path) -> anyhow::Result<TractStudent> {
        Self::load_timed(manifest_path).map(|(s, _)| s)
    }

    /// [`TractStudent::load`], and how long its two halves took (a drive's cold start reports them).
    pub fn load_timed(manifest_path: &Path) -> anyhow::Result<(TractStudent, LoadTimes)> {
        let t0 = std::time::Instant::now();
        let manifest = Manifest::load(manifest_path)?;
        if !manifest.is_driving_graph() {
            return Err(bad_input(format!(
                "model manifest {}: kind is {:?}, the drive loop needs a driving graph (student or teacher)",
                manifest_path.display(),
                manifest.model.kind
            )));
        }
        let bytes = manifest.verify_file()?;
        let typed = parse_typed(&manifest, &bytes)?;
        let t1 = std::time::Instant::now();
        let plan = optimise(&manifest, typed)?;
        let student = Self::from_plan(manifest, plan)?;
        Ok((student, LoadTimes { load: t1 - t0, optimise: t1.elapsed() }))
    }

    fn from_plan(manifest: Manifest, plan: Arc<Plan>) -> anyhow::Result<TractStudent> {
        let model = plan.model();
        let out_index = |role: Role| -> Option<usize> {
            let spec = manifest.output(role)?;
            manifest.outputs.iter().position(|t| t.name == spec.name)
        };
        let image = manifest.input(Role::Image).expect("checked by manifest");
        let image_shape = [image.shape[1], image.shape[2], image.shape[3]];
        let mut input_order = [Role::Image; 3];
        for (i, t) in manifest.inputs.iter().enumerate() {
            input_order[i] = t.role;
        }
        let (features, feature_shape) = match manifest.output(Role::Features) {
            Some(f) => (vec![0.0; f.shape[1] * f.shape[2]], [f.shape[1], f.shape[2]]),
            None => (Vec::new(), [0, 0]),
        };
        debug_assert_eq!(model.outputs.len(), manifest.outputs.len());
        let state = TypedSimpleState::new(&plan).context("creating tract state")?;
        Ok(TractStudent {
            out_path: out_index(Role::Path).expect("checked"),
            out_speed: out_index(Role::SpeedWps).expect("checked"),
            out_features: out_index(Role::Features),
            manifest,
            state,
            image_shape,
            input_order,
            result: Inference { waypoints: Waypoints::default(), features, feature_shape },
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Multiply-accumulates per inference by tract's own cost model (conv, matmul and einsum nodes of the optimised
    /// graph): what achieved GFLOP/s are computed from, and what an ARM instruction count is divided by.
    pub fn macs(&self) -> u64 {
        graph_macs(self.state.model())
    }
}

/// Sum of the `FMA` costs of every node whose cost has a concrete size.
pub fn graph_macs(model: &TypedModel) -> u64 {
    let mut total = 0u64;
    for node in model.nodes() {
        let Ok(inputs) = model.node_input_facts(node.id) else { continue };
        let Ok(costs) = node.op.cost(&inputs) else { continue };
        for (cost, count) in costs {
            if let (tract_onnx::tract_core::ops::Cost::FMA(_), Ok(n)) = (cost, count.to_i64()) {
                total += n.max(0) as u64;
            }
        }
    }
    total
}

/// How long [`TractStudent::load_timed`] took.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadTimes {
    /// Manifest, model file read + sha256 check, ONNX parse, typing with the manifest's shapes.
    pub load: std::time::Duration,
    /// tract's optimiser, the runnable plan and its state.
    pub optimise: std::time::Duration,
}

/// Parse the ONNX bytes, pin the manifest's input shapes, check graph I/O against the manifest, optimise.
pub fn build_plan(manifest: &Manifest, bytes: &[u8]) -> anyhow::Result<Arc<Plan>> {
    optimise(manifest, parse_typed(manifest, bytes)?)
}

/// Parse the ONNX bytes, pin the manifest's input shapes and check the graph's I/O against the manifest.
fn parse_typed(manifest: &Manifest, bytes: &[u8]) -> anyhow::Result<TypedModel> {
    let path = manifest.onnx_path();
    let what = || format!("model file {}", path.display());
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| bad_input(format!("{}: not a loadable ONNX model ({})", what(), root_cause(&e))))?;
    let graph_inputs = model.input_outlets()?.len();
    if graph_inputs != manifest.inputs.len() {
        return Err(bad_input(format!(
            "{}: graph has {graph_inputs} inputs, manifest declares {}",
            what(),
            manifest.inputs.len()
        )));
    }
    for (i, spec) in manifest.inputs.iter().enumerate() {
        let outlet = model.input_outlets()?[i];
        let name = &model.node(outlet.node).name;
        if name != &spec.name {
            return Err(bad_input(format!("{}: graph input {i} is {name:?}, manifest says {:?}", what(), spec.name)));
        }
        model = model
            .with_input_fact(i, f32::fact(spec.shape.clone()).into())
            .map_err(|e| bad_input(format!("{}: input {:?}: {}", what(), spec.name, root_cause(&e))))?;
    }
    let typed = model.into_typed().map_err(|e| {
        bad_input(format!("{}: cannot type the graph with the manifest's shapes ({})", what(), root_cause(&e)))
    })?;
    check_outputs(&typed, &manifest.outputs).map_err(|m| bad_input(format!("{}: {m}", what())))?;
    Ok(typed)
}

/// tract's optimiser (unless the manifest turns it off) and the runnable plan.
fn optimise(manifest: &Manifest, typed: TypedModel) -> anyhow::Result<Arc<Plan>> {
    let path = manifest.onnx_path();
    let what = || format!("model file {}", path.display());
    if !manifest.model.optimize {
        return typed.into_runnable();
    }
    let optimized = typed
        .into_optimized()
        .map_err(|e| bad_input(format!("{}: optimisation failed ({})", what(), root_cause(&e))))?;
    optimized.into_runnable()
}

fn root_cause(e: &anyhow::Error) -> String {
    e.root_cause().to_string().replace('\n', " ")
}

fn check_outputs(model: &TypedModel, specs: &[TensorSpec]) -> Result<(), String> {
    let outlets = model.output_outlets().map_err(|e| e.to_string())?;
    if outlets.len() != specs.len() {
        return Err(format!("graph has {} outputs, manifest declares {}", outlets.len(), specs.len()));
    }
    for (i, spec) in specs.iter().enumerate() {
        let outlet = outlets[i];
        let label = model.outlet_label(outlet).unwrap_or(&model.node(outlet.node).name);
        if label != spec.name {
            return Err(format!("graph output {i} is {label:?}, manifest says {:?}", spec.name));
        }
        let fact = model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        if fact.datum_type != f32::datum_type() {
            return Err(format!("output {:?} is {:?}, manifest says f32", spec.name, fact.datum_type));
        }
        let shape: Option<Vec<usize>> = fact.shape.as_concrete().map(|s| s.to_vec());
        if shape.as_deref() != Some(&spec.shape[..]) {
            return Err(format!("output {:?} has shape {:?}, manifest says {:?}", spec.name, fact.shape, spec.shape));
        }
    }
    Ok(())
}

impl Student for TractStudent {
    fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    fn infer(&mut self, input: &PolicyInput<'_>) -> anyhow::Result<&Inference> {
        let [c, h, w] = self.image_shape;
        let ego = input.ego;
        let mut inputs: TVec<TValue> = tvec!();
        for role in self.input_order {
            let t = match role {
                Role::Image => Tensor::from_shape(&[1, c, h, w], input.image)?,
                Role::Speed => Tensor::from_shape(&[1, 1], &[ego.speed_mps])?,
                _ => {
                    let tp = ego.target_points;
                    Tensor::from_shape(&[1, 2, 2], &[tp[0][0], tp[0][1], tp[1][0], tp[1][1]])?
                }
            };
            inputs.push(t.into());
        }
        let outputs = self.state.run(inputs)?;
        let path = outputs[self.out_path].try_as_plain_ram()?.as_slice::<f32>()?;
        let speed = outputs[self.out_speed].try_as_plain_ram()?.as_slice::<f32>()?;
        let wps = &mut self.result.waypoints;
        for i in 0..PATH_POINTS {
            wps.path[i] = [path[2 * i], path[2 * i + 1]];
        }
        for i in 0..SPEED_POINTS {
            wps.speed_wps[i] = [speed[2 * i], speed[2 * i + 1]];
        }
        if let Some(fi) = self.out_features {
            self.result.features.copy_from_slice(outputs[fi].try_as_plain_ram()?.as_slice::<f32>()?);
        }
        Ok(&self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EgoState;

    pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fixture/student_fixture.toml");

    #[test]
    fn fixture_loads_and_points_at_the_target() {
        let mut s = TractStudent::load(Path::new(FIXTURE)).unwrap();
        assert_eq!(s.image_shape(), [3, 128, 256]);
        let img = vec![0.1f32; 3 * 128 * 256];
        let ego = EgoState { speed_mps: 3.0, target_points: [[10.0, 0.0], [30.0, 0.0]] };
        let out = s.infer(&PolicyInput { image: &img, ego: &ego, privileged: None }).unwrap();
        // The fixture's analytic head points the path at target point 0 (straight ahead here).
        assert!((out.waypoints.path[9][0] - 10.0).abs() < 0.02, "{:?}", out.waypoints.path[9]);
        assert!(out.waypoints.path[9][1].abs() < 0.02);
        assert_eq!(out.feature_shape, [32, 64]);
        assert!(out.features.iter().all(|v| v.is_finite()));
        assert!(out.features.iter().any(|v| *v != 0.0), "features must depend on the image");
    }
}
