//! The student's language branch on tract: a resampler (one keyframe of a snapshot → latents) and one decoder step
//! with an explicit fixed-size KV cache, run greedily until `<eos>`. Offline only: it allocates freely.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::error::bad_input;
use crate::events::snapshot::MODEL_ID_BYTES;
use crate::model::manifest::{beside, read_verified};
use crate::types::{Point, PATH_POINTS, SPEED_POINTS};

type Plan = TypedSimplePlan;

/// `language.toml`, written by models/distill/export.py (`export_language`).
#[derive(Debug, Clone, Deserialize)]
pub struct LanguageManifest {
    pub model: LanguageModelInfo,
    pub io: LanguageIo,
    pub vocab: Vocab,
    #[serde(default)]
    pub provenance: toml::Table,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LanguageModelInfo {
    pub name: String,
    /// Always "language".
    pub kind: String,
    pub resampler_onnx: PathBuf,
    pub resampler_sha256: String,
    pub step_onnx: PathBuf,
    pub step_sha256: String,
    pub precision: String,
}

/// Tensor shapes of the two graphs.
#[derive(Debug, Clone, Deserialize)]
pub struct LanguageIo {
    /// [1, tokens, dims]: must match the snapshot keyframes' feature shape.
    pub features: Vec<usize>,
    pub latents: Vec<usize>,
    /// [layers, 1, heads, max_len, head_dim], the same for keys and values.
    pub kv_cache: Vec<usize>,
    pub logits: Vec<usize>,
    pub max_len: usize,
    /// How long before the keyframe `speed_prev` is taken (seconds).
    #[serde(default = "default_speed_prev_s")]
    pub speed_prev_s: f64,
    /// sha256 of the driving graphs whose features this branch was trained on (the student f32 and int8; empty in
    /// manifests from before 2026-11-26: any). Snapshots name their graph (`Snapshot::model_id`), so `explain`
    /// refuses features of another model instead of decoding them into confident nonsense.
    #[serde(default)]
    pub features_from: Vec<String>,
}

impl LanguageIo {
    /// Why a snapshot's features are not for this branch, if they are not: they name a driving graph (schema 2)
    /// and it is none of `features_from`. Unknown graphs (schema-1 snapshots) and old manifests pass.
    pub fn foreign_features(&self, snapshot_model: Option<&str>) -> Option<String> {
        let model = snapshot_model?;
        let reads = |h: &String| h.get(..model.len()).is_some_and(|p| p.eq_ignore_ascii_case(model));
        if self.features_from.is_empty() || self.features_from.iter().any(reads) {
            return None;
        }
        let ours: Vec<&str> = self.features_from.iter().map(|h| h.get(..2 * MODEL_ID_BYTES).unwrap_or(h)).collect();
        Some(format!("features of driving model {model}; this language branch reads those of {}", ours.join(", ")))
    }
}

fn default_speed_prev_s() -> f64 {
    0.5
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub pad: i64,
    pub bos: i64,
    pub eos: i64,
}

impl Vocab {
    /// Token ids → sentence. The tokenizer lower-cases; sentence starts are capitalised again here.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut s = String::new();
        let mut capital = true;
        for &id in ids {
            if id == self.eos {
                break;
            }
            if id == self.pad || id == self.bos {
                continue;
            }
            let w = self.tokens.get(id as usize).map_or("<?>", String::as_str);
            if !(s.is_empty() || w == "." || w == ",") {
                s.push(' ');
            }
            let mut c = w.chars();
            match c.next() {
                Some(f) if capital => s.extend(f.to_uppercase().chain(c)),
                _ => s.push_str(w),
            }
            capital = w == ".";
        }
        s
    }
}

/// What the language branch reads: one keyframe of a snapshot and the telemetry of its tick.
#[derive(Debug, Clone)]
pub struct KeyframeContext {
    /// Visual features [tokens × dims], row-major.
    pub features: Vec<f32>,
    pub feature_shape: [usize; 2],
    pub speed: f32,
    /// Ego speed `speed_prev_s` before the keyframe (from the snapshot's window).
    pub speed_prev: f32,
    pub target_points: [Point; 2],
    pub path: [Point; PATH_POINTS],
    pub speed_wps: [Point; SPEED_POINTS],
}

/// One greedy decode.
#[derive(Debug, Clone)]
pub struct Commentary {
    /// `<bos>` first; ends with `<eos>` unless `max_len` was reached.
    pub tokens: Vec<i64>,
    pub text: String,
    /// Logits of the first step (for parity checks).
    pub first_logits: Vec<f32>,
}

/// The loaded language branch.
pub struct LanguageBranch {
    manifest: LanguageManifest,
    resampler: Arc<Plan>,
    step: Arc<Plan>,
}

impl LanguageManifest {
    pub fn load(path: &Path) -> anyhow::Result<LanguageManifest> {
        let what = || format!("language manifest {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| bad_input(format!("{}: {e}", what())))?;
        // Say what it is before serde complains about its fields: a student or teacher manifest is a common mix-up.
        if let Some(kind) = crate::model::manifest::manifest_kind(&text).filter(|k| k != "language") {
            return Err(bad_input(format!(
                "{}: not a language manifest (its [model] kind is \"{kind}\"); the student's language branch is \
                 models/student/language.toml",
                what()
            )));
        }
        let mut m: LanguageManifest =
            toml::from_str(&text).map_err(|e| bad_input(format!("{}: {}", what(), e.message().replace('\n', " "))))?;
        m.path = path.to_path_buf();
        crate::model::integrity::check(&text).map_err(|msg| bad_input(format!("{}: {msg}", what())))?;
        if m.model.kind != "language" {
            return Err(bad_input(format!("{}: kind is {:?}, expected \"language\"", what(), m.model.kind)));
        }
        let io = &m.io;
        if io.features.len() != 3 || io.latents.len() != 3 || io.kv_cache.len() != 5 || io.max_len < 2 {
            return Err(bad_input(format!("{}: [io] shapes are malformed", what())));
        }
        if io.logits != [1, m.vocab.tokens.len()] {
            return Err(bad_input(format!(
                "{}: logits {:?} do not match the vocabulary ({} tokens)",
                what(),
                io.logits,
                m.vocab.tokens.len()
            )));
        }
        Ok(m)
    }

    fn file(&self, rel: &Path, sha: &str) -> anyhow::Result<(PathBuf, Vec<u8>)> {
        let p = beside(&self.path, rel);
        let bytes = read_verified(&p, sha, &self.path)?;
        Ok((p, bytes))
    }
}

/// Build a plan with the given input facts, refusing files that do not load.
fn plan(path: &Path, bytes: &[u8], facts: Vec<InferenceFact>) -> anyhow::Result<Arc<Plan>> {
    let what = || format!("model file {}", path.display());
    let cause = |e: anyhow::Error| e.root_cause().to_string().replace('\n', " ");
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| bad_input(format!("{}: not a loadable ONNX model ({})", what(), cause(e))))?;
    let n = model.input_outlets()?.len();
    if n != facts.len() {
        return Err(bad_input(format!("{}: graph has {n} inputs, expected {}", what(), facts.len())));
    }
    for (i, f) in facts.into_iter().enumerate() {
        model = model.with_input_fact(i, f)?;
    }
    model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| bad_input(format!("{}: cannot build the graph with the manifest's shapes ({})", what(), cause(e))))
}

impl LanguageBranch {
    /// Load, verify (sha256) and optimise both graphs. Every problem is bad input (exit 2).
    pub fn load(manifest_path: &Path) -> anyhow::Result<LanguageBranch> {
        let manifest = LanguageManifest::load(manifest_path)?;
        let io = &manifest.io;
        let (rp, rb) = manifest.file(&manifest.model.resampler_onnx, &manifest.model.resampler_sha256)?;
        let (sp, sb) = manifest.file(&manifest.model.step_onnx, &manifest.model.step_sha256)?;
        // The resampler reads a keyframe: features, speed, speed before, target points, path, speed waypoints.
        let resampler = plan(
            &rp,
            &rb,
            vec![
                f32::fact(io.features.clone()).into(),
                f32::fact([1, 1]).into(),
                f32::fact([1, 1]).into(),
                f32::fact([1, 2, 2]).into(),
                f32::fact([1, PATH_POINTS, 2]).into(),
                f32::fact([1, SPEED_POINTS, 2]).into(),
            ],
        )?;
        let step = plan(
            &sp,
            &sb,
            vec![
                i64::fact([1, 1]).into(),
                i64::fact([1]).into(),
                f32::fact(io.latents.clone()).into(),
                f32::fact(io.kv_cache.clone()).into(),
                f32::fact(io.kv_cache.clone()).into(),
            ],
        )?;
        Ok(LanguageBranch { manifest, resampler, step })
    }

    pub fn manifest(&self) -> &LanguageManifest {
        &self.manifest
    }

    /// Feature shape `[tokens, dims]` the branch expects.
    pub fn feature_shape(&self) -> [usize; 2] {
        [self.manifest.io.features[1], self.manifest.io.features[2]]
    }

    /// Greedy commentary for one keyframe.
    pub fn explain(&self, ctx: &KeyframeContext) -> anyhow::Result<Commentary> {
        let want = self.feature_shape();
        if ctx.feature_shape != want || ctx.features.len() != want[0] * want[1] {
            return Err(bad_input(format!(
                "keyframe features are {:?}, the language branch {} reads {:?}",
                ctx.feature_shape, self.manifest.model.name, want
            )));
        }
        let flat = |pts: &[Point]| pts.iter().flatten().copied().collect::<Vec<f32>>();
        let latents = self
            .resampler
            .run(tvec![
                tensor_f32(&[1, want[0], want[1]], ctx.features.clone())?,
                tensor_f32(&[1, 1], vec![ctx.speed])?,
                tensor_f32(&[1, 1], vec![ctx.speed_prev])?,
                tensor_f32(&[1, 2, 2], flat(&ctx.target_points))?,
                tensor_f32(&[1, PATH_POINTS, 2], flat(&ctx.path))?,
                tensor_f32(&[1, SPEED_POINTS, 2], flat(&ctx.speed_wps))?,
            ])?
            .remove(0);
        let vocab = &self.manifest.vocab;
        let kv = Tensor::zero::<f32>(&self.manifest.io.kv_cache)?;
        let (mut k, mut v): (TValue, TValue) = (kv.clone().into(), kv.into());
        let mut tokens = vec![vocab.bos];
        let mut first_logits = Vec::new();
        for pos in 0..self.manifest.io.max_len - 1 {
            let token = Tensor::from_shape(&[1, 1], &[*tokens.last().expect("bos")])?;
            let mut out = self.step.run(tvec![
                token.into(),
                Tensor::from_shape(&[1], &[pos as i64])?.into(),
                latents.clone(),
                k,
                v,
            ])?;
            v = out.pop().expect("new_v");
            k = out.pop().expect("new_k");
            let logits = out.pop().expect("logits");
            let logits = logits.try_as_plain_ram()?.as_slice::<f32>()?;
            if pos == 0 {
                first_logits = logits.to_vec();
            }
            if logits.iter().any(|x| !x.is_finite()) {
                return Err(anyhow::anyhow!("language branch produced non-finite logits at step {pos}"));
            }
            let next =
                logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
            tokens.push(next as i64);
            if next as i64 == vocab.eos {
                break;
            }
        }
        let text = vocab.decode(&tokens);
        Ok(Commentary { tokens, text, first_logits })
    }
}

fn tensor_f32(shape: &[usize], data: Vec<f32>) -> anyhow::Result<TValue> {
    Ok(Tensor::from_shape(shape, &data)?.into())
}

/// `<prefix>.parity.json` written by export.py: keyframe contexts and what PyTorch decoded from them.
#[derive(Debug, Deserialize)]
struct LanguageVectors {
    reference: String,
    tolerance: f32,
    cases: Vec<LanguageCase>,
}

#[derive(Debug, Deserialize)]
struct LanguageCase {
    features: Vec<f32>,
    speed: Vec<f32>,
    speed_prev: Vec<f32>,
    target_points: Vec<f32>,
    path: Vec<f32>,
    speed_wps: Vec<f32>,
    tokens: Vec<i64>,
    first_logits: Vec<f32>,
}

/// Result of `rtvla model check` on a language manifest.
#[derive(Debug, Serialize)]
pub struct LanguageCheck {
    pub model: String,
    pub reference: String,
    pub cases: usize,
    /// Max |tract − reference| over the first step's logits.
    pub max_abs_diff_logits: f32,
    pub tolerance: f32,
    /// Cases whose greedy token sequence is identical to the reference's.
    pub same_tokens: usize,
    pub passed: bool,
}

/// Is this manifest a language branch (so `model check` runs the language parity instead of the driving one)?
pub fn is_language_manifest(path: &Path) -> bool {
    let kind = std::fs::read_to_string(path).ok().and_then(|t| crate::model::manifest::manifest_kind(&t));
    kind.as_deref() == Some("language")
}

/// Run every reference context through tract: first-step logits within tolerance and the same greedy sentence.
pub fn check_parity(manifest: &Path, vectors: Option<&Path>) -> anyhow::Result<LanguageCheck> {
    let (vpath, v) = crate::model::tools::read_vectors(manifest, vectors, |v: &LanguageVectors| v.cases.len())?;
    let branch = LanguageBranch::load(manifest)?;
    let shape = branch.feature_shape();
    let (mut diff, mut same) = (0.0f32, 0usize);
    for (i, c) in v.cases.iter().enumerate() {
        let bad = |what: &str| bad_input(format!("parity vectors {}: case {i}: {what}", vpath.display()));
        let pts = |x: &[f32], n: usize| -> anyhow::Result<Vec<Point>> {
            if x.len() != 2 * n {
                return Err(bad("wrong number of points"));
            }
            Ok(x.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
        };
        let ctx = KeyframeContext {
            features: c.features.clone(),
            feature_shape: shape,
            speed: *c.speed.first().ok_or_else(|| bad("speed"))?,
            speed_prev: *c.speed_prev.first().ok_or_else(|| bad("speed_prev"))?,
            target_points: pts(&c.target_points, 2)?.try_into().expect("2 points"),
            path: pts(&c.path, PATH_POINTS)?.try_into().expect("20 points"),
            speed_wps: pts(&c.speed_wps, SPEED_POINTS)?.try_into().expect("10 points"),
        };
        let got = branch.explain(&ctx)?;
        if got.first_logits.len() != c.first_logits.len() {
            return Err(bad("first_logits length differs from the vocabulary"));
        }
        for (g, e) in got.first_logits.iter().zip(&c.first_logits) {
            diff = diff.max((g - e).abs());
        }
        // The reference pads after <eos>; compare up to and including it.
        let eos = branch.manifest.vocab.eos;
        let end = |t: &[i64]| t.iter().position(|&x| x == eos).map_or(t.len(), |p| p + 1);
        same += usize::from(got.tokens[..end(&got.tokens)] == c.tokens[..end(&c.tokens)]);
    }
    Ok(LanguageCheck {
        model: branch.manifest.model.name.clone(),
        reference: v.reference,
        cases: v.cases.len(),
        max_abs_diff_logits: diff,
        tolerance: v.tolerance,
        same_tokens: same,
        passed: diff.is_finite() && diff <= v.tolerance && same == v.cases.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_another_driving_model_are_refused() {
        let sha = |c: char| c.to_string().repeat(64);
        let io = |from: Vec<String>| LanguageIo {
            features: vec![1, 32, 64],
            latents: vec![1, 18, 128],
            kv_cache: vec![2, 1, 4, 24, 32],
            logits: vec![1, 226],
            max_len: 24,
            speed_prev_s: 0.5,
            features_from: from,
        };
        let ours = io(vec![sha('a'), sha('B')]);
        assert_eq!(ours.foreign_features(Some("aaaaaaaaaaaaaaaa")), None);
        assert_eq!(ours.foreign_features(Some("bbbbbbbbbbbbbbbb")), None, "hex case does not matter");
        assert_eq!(ours.foreign_features(None), None, "a schema-1 snapshot names no model: explained as before");
        let why = ours.foreign_features(Some("cccccccccccccccc")).unwrap();
        assert_eq!(why, "features of driving model cccccccccccccccc; this language branch reads those of aaaaaaaaaaaaaaaa, BBBBBBBBBBBBBBBB");
        assert_eq!(
            io(vec![]).foreign_features(Some("cccccccccccccccc")),
            None,
            "a manifest without the list reads any"
        );
    }

    #[test]
    fn vocab_decodes_to_capitalised_sentences() {
        let words =
            ["<pad>", "<bos>", "<eos>", "<unk>", ".", "follow", "the", "route", "keep", "speed", "in", "7", "m"];
        let v = Vocab { tokens: words.iter().map(|w| w.to_string()).collect(), pad: 0, bos: 1, eos: 2 };
        // <bos> follow the route . keep speed in 7 m . <eos> (then padding that must be ignored)
        let ids = [1, 5, 6, 7, 4, 8, 9, 10, 11, 12, 4, 2, 8, 0];
        assert_eq!(v.decode(&ids), "Follow the route. Keep speed in 7 m.");
        assert_eq!(v.decode(&[1, 2]), "");
        assert_eq!(v.decode(&[1, 99]), "<?>");
    }
}
