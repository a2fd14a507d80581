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
        let typed = typed_graph(&manifest, &bytes)?;
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
    optimise(manifest, typed_graph(manifest, bytes)?)
}

/// Parse the ONNX bytes, pin the manifest's input shapes and check the graph's I/O against the manifest.
pub fn typed_graph(manifest: &Manifest, bytes: &[u8]) -> anyhow::Result<TypedModel> {
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
    let typed = if manifest.model.precision == "f16" {
        to_f16(typed).map_err(|e| bad_input(format!("{}: f16 transform failed ({})", what(), root_cause(&e))))?
    } else {
        typed
    };
    let optimized = typed
        .into_optimized()
        .map_err(|e| bad_input(format!("{}: optimisation failed ({})", what(), root_cause(&e))))?;
    optimized.into_runnable()
}

/// Precision `f16`: tract's `f32_to_f16` transform, after declutter and before optimisation (tract picks its arm64
/// fp16 kernels — `asimdhp`, the Pi 5's A76 and the Orin's A78AE have it — only for an f16 graph). The transform
/// also turns the graph's inputs and outputs into f16; casts at both ends keep them f32, so the runtime (preprocess,
/// controller, snapshot features) is the same for every precision.
fn to_f16(typed: TypedModel) -> TractResult<TypedModel> {
    let mut m = typed.into_decluttered()?;
    let transform = tract_onnx::tract_core::transform::get_transform("f32_to_f16")?
        .ok_or_else(|| anyhow::anyhow!("this tract has no f32_to_f16 transform"))?;
    transform.transform(&mut m)?;
    for i in 0..m.inputs.len() {
        let source = m.inputs[i];
        let fact = m.outlet_fact(source)?.clone();
        if fact.datum_type != f16::datum_type() {
            continue;
        }
        let mut f32_fact = fact.clone();
        f32_fact.datum_type = f32::datum_type();
        let successors: Vec<InletId> = m.outlet_successors(source).to_vec();
        let node = m.node_mut(source.node);
        node.op = Box::new(tract_onnx::tract_core::ops::source::TypedSource::new(f32_fact.clone()));
        node.outputs[0].fact = f32_fact;
        let name = format!("{}.to_f16", m.node(source.node).name);
        let cast = m.wire_node(name, tract_onnx::tract_core::ops::cast::cast(f16::datum_type()), &[source])?[0];
        for inlet in successors {
            m.add_edge(cast, inlet)?;
        }
    }
    for o in 0..m.outputs.len() {
        let out = m.outputs[o];
        if m.outlet_fact(out)?.datum_type != f16::datum_type() {
            continue;
        }
        let label = m.outlet_label(out).map(str::to_owned);
        let name = format!("{}.to_f32", m.node(out.node).name);
        let cast = m.wire_node(name, tract_onnx::tract_core::ops::cast::cast(f32::datum_type()), &[out])?[0];
        m.outputs[o] = cast;
        if let Some(label) = label {
            m.outlet_labels.remove(&out);
            m.set_outlet_label(cast, label)?;
        }
    }
    m.into_decluttered()
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

    #[test]
    fn f16_precision_runs_in_half_with_f32_io_and_stays_close_to_f32() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = Path::new(FIXTURE).with_file_name("student_fixture.onnx");
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        let text = text.replace("precision = \"f32\"", "precision = \"f16\"");
        let text = text.replace("onnx = \"student_fixture.onnx\"", &format!("onnx = {:?}", onnx.display().to_string()));
        assert!(text.contains("precision = \"f16\""));
        let m16 = dir.path().join("f16.toml");
        std::fs::write(&m16, text).unwrap();
        let manifest = Manifest::load(&m16).unwrap();
        let plan = build_plan(&manifest, &manifest.verify_file().unwrap()).unwrap();
        let model = plan.model();
        let halves = model.nodes.iter().flat_map(|n| &n.outputs).filter(|o| o.fact.datum_type == f16::datum_type());
        assert!(halves.count() > 0, "an f16 manifest must run f16 tensors");
        for o in model.input_outlets().unwrap().iter().chain(model.output_outlets().unwrap()) {
            assert_eq!(model.outlet_fact(*o).unwrap().datum_type, f32::datum_type(), "graph I/O stays f32");
        }
        let img: Vec<f32> = (0..3 * 128 * 256).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
        let ego = EgoState { speed_mps: 3.0, target_points: [[10.0, 1.0], [30.0, -2.0]] };
        let input = PolicyInput { image: &img, ego: &ego, privileged: None };
        let mut s16 = TractStudent::from_plan(manifest, plan).unwrap();
        let w16 = s16.infer(&input).unwrap().waypoints;
        let w32 = TractStudent::load(Path::new(FIXTURE)).unwrap().infer(&input).unwrap().waypoints;
        let diff = w16.path.iter().chain(&w16.speed_wps).zip(w32.path.iter().chain(&w32.speed_wps));
        let max = diff.map(|(a, b)| (a[0] - b[0]).abs().max((a[1] - b[1]).abs())).fold(0.0f32, f32::max);
        assert!(max < 0.1, "f16 vs f32 waypoints differ by {max} m");
    }
}
