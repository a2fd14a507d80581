//! Model manifests: the contract between a trained ONNX file and the runtime.
//!
//! A manifest names the ONNX file, its sha256, and the role, dtype and shape of every input and output,
//! so a wrong or corrupt model is refused before the loop starts (exit 2), not discovered at tick 1.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::bad_input;
use crate::events::snapshot::MODEL_ID_BYTES;
use crate::types::{PATH_POINTS, SPEED_POINTS};

/// What a tensor means to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// [1, 3, H, W] normalised RGB.
    Image,
    /// [1, 1] ego speed in m/s.
    Speed,
    /// [1, 2, 2] two route target points in the ego frame.
    TargetPoints,
    /// [1, 20, 2] path points 1 m apart.
    Path,
    /// [1, 10, 2] speed waypoints 0.25 s apart.
    SpeedWps,
    /// [1, N, C] visual features consumed by the language branch.
    Features,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub role: Role,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    pub shape: Vec<usize>,
}

fn default_dtype() -> String {
    "f32".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    /// student | language | teacher
    pub kind: String,
    /// ONNX file, relative to the manifest.
    pub onnx: PathBuf,
    pub sha256: String,
    /// f32 | int8 | f16
    pub precision: String,
    /// A fixture is an untrained stand-in with the real I/O contract.
    #[serde(default)]
    pub fixture: bool,
    #[serde(default)]
    pub description: String,
    /// Run tract's optimiser on the graph (default). `false` runs the typed graph as is: for graphs too large for
    /// the optimiser to finish in reasonable time (the teacher's 22 unrolled decoder steps, ~10 000 nodes, take
    /// minutes there; typed, it loads in a second and runs ~5x slower than an optimised graph would).
    #[serde(default = "default_true")]
    pub optimize: bool,
}

fn default_true() -> bool {
    true
}

/// Image normalisation the model was trained with (ImageNet by default, as SimLingo).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessSpec {
    fn default() -> Self {
        PreprocessSpec { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelInfo,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    #[serde(default)]
    pub preprocess: PreprocessSpec,
    /// Free-form training provenance (dataset seeds, commit, training time).
    #[serde(default)]
    pub provenance: toml::Table,
    /// Free-form measured metrics.
    #[serde(default)]
    pub metrics: toml::Table,
    /// The manifest's own hash, checked on load (`super::integrity`).
    #[serde(default, skip_serializing)]
    pub integrity: Option<toml::Table>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The `[model] kind` of a manifest's text (student, teacher, language), read before the manifest is parsed for
/// its type, so a manifest of the wrong kind is named as such rather than by the fields it lacks.
pub fn manifest_kind(text: &str) -> Option<String> {
    let table = text.parse::<toml::Table>().ok()?;
    table.get("model")?.get("kind")?.as_str().map(str::to_owned)
}

/// `file` as a manifest names it: absolute, or relative to the manifest's directory.
pub fn beside(manifest: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        manifest.parent().unwrap_or(Path::new(".")).join(file)
    }
}

/// Read a model file a manifest names and check its sha256; every failure is bad input naming the file.
pub fn read_verified(path: &Path, sha256: &str, manifest: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| bad_input(format!("model file {} (from {}): {e}", path.display(), manifest.display())))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if !got.eq_ignore_ascii_case(sha256.trim()) {
        return Err(bad_input(format!(
            "model file {}: sha256 mismatch (manifest says {sha256}, file is {got})",
            path.display()
        )));
    }
    Ok(bytes)
}

impl Manifest {
    /// Read and check a manifest (structure only; `verify_file` checks the ONNX file's hash).
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad_input(format!("model manifest {}: {e}", path.display())))?;
        // A language-branch manifest is a common mix-up: say so rather than list its missing fields.
        if manifest_kind(&text).as_deref() == Some("language") {
            return Err(bad_input(format!(
                "model manifest {}: not a driving model manifest (its [model] kind is \"language\": that is what \
                 `rtvla explain --model` takes)",
                path.display()
            )));
        }
        let mut m: Manifest = toml::from_str(&text)
            .map_err(|e| bad_input(format!("model manifest {}: {}", path.display(), e.message().replace('\n', " "))))?;
        m.path = path.to_path_buf();
        m.check_contract().map_err(|msg| bad_input(format!("model manifest {}: {msg}", path.display())))?;
        super::integrity::check(&text).map_err(|msg| bad_input(format!("model manifest {}: {msg}", path.display())))?;
        Ok(m)
    }

    /// Absolute-or-relative path of the ONNX file.
    pub fn onnx_path(&self) -> PathBuf {
        beside(&self.path, &self.model.onnx)
    }

    /// The id event snapshots record for this graph: the first bytes of its sha256 (zero if that is not hex; a
    /// loaded model's sha256 was checked against its file, so it is).
    pub fn model_id(&self) -> [u8; MODEL_ID_BYTES] {
        let mut id = [0; MODEL_ID_BYTES];
        let hex_prefix = self.model.sha256.trim().get(..2 * id.len()).unwrap_or("");
        if hex::decode_to_slice(hex_prefix, &mut id).is_err() {
            id = [0; MODEL_ID_BYTES];
        }
        id
    }

    /// Check the ONNX file exists and its sha256 matches; returns its bytes.
    pub fn verify_file(&self) -> anyhow::Result<Vec<u8>> {
        read_verified(&self.onnx_path(), &self.model.sha256, &self.path)
    }

    /// The spec with a given role, if present.
    pub fn input(&self, role: Role) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.role == role)
    }

    pub fn output(&self, role: Role) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.role == role)
    }

    /// A student, or a teacher exported in vision-only mode with the student's I/O contract (evaluation only).
    pub fn is_driving_graph(&self) -> bool {
        matches!(self.model.kind.as_str(), "student" | "teacher")
    }

    /// The student contract: roles present once each, dtypes f32, shapes as docs/ARCHITECTURE.md §3 says.
    fn check_contract(&self) -> Result<(), String> {
        if !self.is_driving_graph() {
            return Ok(());
        }
        // The runtime divides by std: a zero or non-finite value would feed the model garbage without a fault.
        let p = &self.preprocess;
        if p.mean.iter().chain(&p.std).any(|v| !v.is_finite()) || p.std.iter().any(|s| *s <= 0.0) {
            return Err(format!("[preprocess] mean {:?} / std {:?}: all finite, std > 0", p.mean, p.std));
        }
        for t in self.inputs.iter().chain(&self.outputs) {
            if t.dtype != "f32" {
                return Err(format!(
                    "tensor {:?}: dtype {} unsupported (the runtime feeds and reads f32)",
                    t.name, t.dtype
                ));
            }
        }
        let want_in = [Role::Image, Role::Speed, Role::TargetPoints];
        for role in want_in {
            let n = self.inputs.iter().filter(|t| t.role == role).count();
            if n != 1 {
                return Err(format!("inputs: need exactly one {role:?} tensor, found {n}"));
            }
        }
        if self.inputs.len() != want_in.len() {
            return Err(format!("inputs: expected {} tensors, found {}", want_in.len(), self.inputs.len()));
        }
        for role in [Role::Path, Role::SpeedWps] {
            let n = self.outputs.iter().filter(|t| t.role == role).count();
            if n != 1 {
                return Err(format!("outputs: need exactly one {role:?} tensor, found {n}"));
            }
        }
        let shape_ok = |role: Role, ok: &dyn Fn(&[usize]) -> bool, want: &str| -> Result<(), String> {
            let t = self.inputs.iter().chain(&self.outputs).find(|t| t.role == role);
            match t {
                Some(t) if !ok(&t.shape) => {
                    Err(format!("tensor {:?} ({role:?}): shape {:?}, expected {want}", t.name, t.shape))
                }
                _ => Ok(()),
            }
        };
        shape_ok(Role::Image, &|s| s.len() == 4 && s[0] == 1 && s[1] == 3 && s[2] >= 8 && s[3] >= 8, "[1, 3, H, W]")?;
        shape_ok(Role::Speed, &|s| s == [1, 1], "[1, 1]")?;
        shape_ok(Role::TargetPoints, &|s| s == [1, 2, 2], "[1, 2, 2]")?;
        shape_ok(Role::Path, &|s| s == [1, PATH_POINTS, 2], "[1, 20, 2]")?;
        shape_ok(Role::SpeedWps, &|s| s == [1, SPEED_POINTS, 2], "[1, 10, 2]")?;
        shape_ok(Role::Features, &|s| s.len() == 3 && s[0] == 1 && s[1] > 0 && s[2] > 0, "[1, N, C]")?;
        Ok(())
    }
}
