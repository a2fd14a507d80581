"""Export the student to ONNX (opset 17, TorchScript exporter: dynamo=False) with manifests, and check parity.

Driving graph (`student.onnx` + `student.toml`): the runtime contract of src/model/manifest.rs —
  inputs image [1,3,128,256], speed [1,1], target_points [1,2,2]; outputs path [1,20,2], speed_wps [1,10,2],
  features [1,N,C].
Language branch (`language_resampler.onnx`, `language_step.onnx` + `language.toml`): features -> latents, and one decoder
step with an explicit fixed-size KV cache in/out (token [1,1] i64, pos [1] i64, latents, past_k, past_v -> logits,
new_k, new_v). Parity: PyTorch vs onnxruntime on random and (if given) real inputs; max abs diff printed and returned.

    python export.py --ckpt RUN/student_s2.pt --driving-ckpt RUN/student_s1.pt --out DIR [--name NAME]
    python export.py --derive-f16 DIR/student.toml     # the f16 variant (same ONNX, precision "f16")
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess

import numpy as np
import torch
import torch.nn as nn

from data import IMG_H, IMG_W, MEAN, N_PATH, N_SPEED, PREV_STEPS, STD, TEXT_LEN, VOCAB

OPSET = 17


class DrivingGraph(nn.Module):
    def __init__(self, driving) -> None:
        super().__init__()
        self.d = driving

    def forward(self, image, speed, target_points):
        return self.d(image, speed, target_points)


class StepGraph(nn.Module):
    def __init__(self, decoder) -> None:
        super().__init__()
        self.dec = decoder

    def forward(self, token, pos, latents, past_k, past_v):
        return self.dec.step(token, pos, latents, past_k, past_v)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """HEAD's short hash, "+dirty" when the training code (this directory's .py files) differs from it: the export
    then came from code no commit holds."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "*.py"], capture_output=True, text=True,
                               cwd=here).stdout.strip()
    except OSError:
        return "unknown"
    return (head + ("+dirty" if dirty else "")) if head else "unknown"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # JSON string escaping is valid TOML basic-string escaping


INTEGRITY_HEADER = "\n[integrity]\n"


def seal_manifest(text: str) -> str:
    """End a manifest with its own hash (src/model/integrity.rs): sha256 of every byte before the `[integrity]`
    line, so an edit of its contract or preprocessing after export is refused by the runtime. Idempotent."""
    at = text.find(INTEGRITY_HEADER)
    body = text[:at + 1] if at >= 0 else (text if text.endswith("\n") else text + "\n")
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body + "[integrity]\n" + f'manifest_sha256 = "{digest}"\n'


def _table(name: str, d: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items() if v is not None)


def _onnx_check(path: str) -> None:
    import onnx
    onnx.checker.check_model(onnx.load(path))


def _ort(path: str, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Int8Reference:
    """The ONNX spec's reference evaluator (onnx.reference, numpy) on a quantized graph: int32 accumulation, one
    float rescale, round half to even -- what tract computes, on any CPU. Seconds a frame: for parity vectors only.

    Its QuantizeLinear/DequantizeLinear start at opset 19; the exporter writes opset 17, whose per-tensor uint8
    forms are the same operation, so the graph is evaluated as opset 21 (every other op in it is unchanged there)."""

    def __init__(self, path: str) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator
        model = onnx.load(path)
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = max(imp.version, 21)
        self.name = f"ONNX reference evaluator (onnx {onnx.__version__}, exact integer arithmetic)"
        self._eval = ReferenceEvaluator(model)

    def run(self, output_names, feed: dict) -> list:
        return self._eval.run(output_names, feed)


def export_driving(driving, out_dir: str, name: str = "student", provenance: dict | None = None,
                   description: str = "", real_inputs: list[dict] | None = None, metrics: dict | None = None,
                   kind: str = "student", raw_frames: list[dict] | None = None, optimize: bool = True) -> dict:
    """Export the driving graph + manifest; returns {'onnx','manifest','max_abs_diff', 'features_shape'}.

    `raw_frames` (camera uint8 frames + ego inputs, see `raw_val_frames`) become `<name>.parity.json`: PyTorch's
    outputs on them, which `rtvla model check` reproduces through the runtime's own preprocess and tract."""
    os.makedirs(out_dir, exist_ok=True)
    driving = driving.eval()
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    ex = (torch.randn(1, 3, IMG_H, IMG_W), torch.tensor([[5.0]]), torch.tensor([[[15.0, 0.5], [35.0, 1.0]]]))
    g = DrivingGraph(driving).eval()
    with torch.no_grad():
        torch.onnx.export(g, ex, onnx_path, opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          input_names=["image", "speed", "target_points"],
                          output_names=["path", "speed_wps", "features"])
        feat_shape = list(g(*ex)[2].shape)
    _onnx_check(onnx_path)
    # parity
    sess = _ort(onnx_path)
    cases = [ex, (torch.randn(1, 3, IMG_H, IMG_W) * 2, torch.tensor([[0.0]]), torch.tensor([[[7.5, -3.0], [50.0, -9.0]]]))]
    for r in real_inputs or []:
        cases.append((r["image"], r["speed"], r["target_points"]))
    max_diff = 0.0
    with torch.no_grad():
        for img, spd, tp in cases:
            want = g(img, spd, tp)
            got = sess.run(None, {"image": img.numpy(), "speed": spd.numpy(), "target_points": tp.numpy()})
            for w, o in zip(want, got):
                max_diff = max(max_diff, float(np.abs(w.numpy() - o).max()))
    print(f"[export] {onnx_path}: parity PyTorch vs onnxruntime over {len(cases)} inputs, max abs diff {max_diff:.3e}")
    if raw_frames:
        with torch.no_grad():
            write_parity_vectors(os.path.join(out_dir, f"{name}.parity.json"), raw_frames,
                                 lambda i, s, t: [o.numpy() for o in g(i, s, t)], "pytorch", 1e-3)
    prov = dict(provenance or {})
    prov.setdefault("generator", "models/distill/export.py")
    prov.setdefault("commit", git_commit())
    prov.setdefault("exported_utc", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    prov["opset"] = OPSET
    prov["parity_max_abs_diff_ort"] = max_diff
    prov["config"] = json.dumps(driving.cfg)
    man = write_driving_manifest(onnx_path, name, kind, "f32", feat_shape, prov, description, metrics, optimize)
    return {"onnx": onnx_path, "manifest": man, "max_abs_diff": max_diff, "features_shape": feat_shape}


def write_driving_manifest(onnx_path: str, name: str, kind: str, precision: str, feat_shape: list[int], prov: dict,
                           description: str, metrics: dict | None, optimize: bool = True) -> str:
    """The runtime's manifest (src/model/manifest.rs) for a driving graph: student or vision-only teacher."""
    man = os.path.join(os.path.dirname(onnx_path), f"{name}.toml")
    text = f"# {kind} driving graph ({precision}, models/distill). Regenerate with models/distill/pipeline.py.\n"
    text += _table("model", {"name": name, "kind": kind, "onnx": os.path.basename(onnx_path),
                             "sha256": sha256(onnx_path), "precision": precision, "fixture": False,
                             "description": description, "optimize": None if optimize else False})
    specs_in = [("image", "image", [1, 3, IMG_H, IMG_W]), ("speed", "speed", [1, 1]),
                ("target_points", "target_points", [1, 2, 2])]
    specs_out = [("path", "path", [1, N_PATH, 2]), ("speed_wps", "speed_wps", [1, N_SPEED, 2]),
                 ("features", "features", feat_shape)]
    for section, specs in (("inputs", specs_in), ("outputs", specs_out)):
        for n, role, shape in specs:
            text += f"\n[[{section}]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in
                                                 {"name": n, "role": role, "dtype": "f32", "shape": shape}.items())
    text += "\n" + _table("preprocess", {"mean": list(MEAN), "std": list(STD)})
    text += "\n" + _table("provenance", prov)
    if metrics:
        text += "\n" + _table("metrics", metrics)
    with open(man, "w") as f:
        f.write(seal_manifest(text))
    print(f"[export] wrote {man}")
    return man


def raw_val_frames(data, idx) -> list[dict]:
    """Full camera frames (uint8 [144, 256, 3], before the runtime's crop) + ego inputs of dataset records."""
    out = []
    for i in idx:
        i = int(i)
        out.append({"rgb": np.ascontiguousarray(data.shards[data.shard_idx[i]][data.frame_idx[i]]),
                    "speed": float(data.speed[i, 0]), "target_points": data.target_points[i].tolist()})
    return out


def write_parity_vectors(path: str, frames: list[dict], run, reference: str, tolerance: float,
                         features_tolerance: float | None = None) -> None:
    """`rtvla model check` input: raw frames + the reference's (path, speed_wps, features) on them."""
    import base64
    from data import CROP_BOTTOM, normalise_batch
    cases = []
    for f in frames:
        img = normalise_batch(f["rgb"][None])
        spd = torch.tensor([[f["speed"]]], dtype=torch.float32)
        tp = torch.tensor([f["target_points"]], dtype=torch.float32)
        path_o, sw_o, feat_o = run(img, spd, tp)
        cases.append({"rgb_b64": base64.b64encode(f["rgb"].tobytes()).decode(), "speed": f["speed"],
                      "target_points": f["target_points"], "path": np.asarray(path_o)[0].tolist(),
                      "speed_wps": np.asarray(sw_o)[0].tolist(),
                      # the teacher's 128x192 ViT tokens would make the file MBs: waypoints suffice there
                      "features": np.asarray(feat_o).reshape(-1).tolist() if np.asarray(feat_o).size <= 8192 else []})
    h, w = frames[0]["rgb"].shape[:2]
    with open(path, "w") as fh:
        json.dump({"reference": reference, "tolerance": tolerance, "features_tolerance": features_tolerance,
                   "frame_width": int(w), "frame_height": int(h),
                   "crop_bottom": CROP_BOTTOM, "cases": cases}, fh)
    print(f"[export] wrote {path} ({len(cases)} reference frames, {reference})")


class TeacherVisionOnly(nn.Module):
    """The teacher in vision-only mode: an empty commentary ([BOS] + PAD, as in training's commentary dropout), so
    it runs the student's I/O contract (features = its ViT tokens). This is the mode its latency is compared in."""

    def __init__(self, teacher) -> None:
        super().__init__()
        from data import BOS, PAD
        self.t = teacher.eval()
        self.cfg = dict(teacher.cfg, mode="vision-only")
        text = torch.full((1, TEXT_LEN - 1), PAD, dtype=torch.long)
        text[0, 0] = BOS
        self.register_buffer("text", text)

    def forward(self, image, speed, target_points):
        vis = self.t.encode(image)
        _, _, wps = self.t.decode(vis, speed, target_points, self.text.expand(image.shape[0], -1))
        return wps[:, :N_PATH], wps[:, N_PATH:], vis


class TeacherLanguageInTheLoop(nn.Module):
    """The teacher as SimLingo drives: it writes its commentary greedily (KV cache, a fixed 22 steps), then predicts
    the waypoints conditioned on it -- one static graph with the student's I/O contract (features = its ViT tokens),
    so `rtvla sim eval` drives it closed loop through tract like any driving graph."""

    def __init__(self, teacher) -> None:
        super().__init__()
        self.t = teacher.eval()
        self.cfg = dict(teacher.cfg, mode="language-in-the-loop")

    def forward(self, image, speed, target_points):
        _, path, speed_wps, vis = self.t.generate_cached(image, speed, target_points)
        return path, speed_wps, vis


def quantize_driving(f32: dict, name: str, calib: list[dict], provenance: dict, description: str,
                     raw_frames: list[dict] | None = None, metrics: dict | None = None) -> dict:
    """int8 in the one form tract runs faster than f32 (../shared/notes-tract-quantization.md): ONNX Runtime static
    quantization, QOperator format (QLinearConv), per-tensor, Conv (+ the Relu folded into it) only; attention,
    LayerNorm, Add and the heads stay f32. Calibrated on real frames. Returns the manifest path and the int8 vs f32
    max abs diff on the calibration frames (onnxruntime)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    out_dir = os.path.dirname(f32["onnx"])
    q_path = os.path.join(out_dir, f"{name}.onnx")
    feeds = [{"image": c["image"].numpy(), "speed": c["speed"].numpy(), "target_points": c["target_points"].numpy()}
             for c in calib]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(f32["onnx"], q_path, Reader(), quant_format=QuantFormat.QOperator, per_channel=False,
                    op_types_to_quantize=["Conv", "Relu"], activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    _onnx_check(q_path)
    # The parity reference is the ONNX spec's own numpy evaluator (exact integer accumulation), not ONNX Runtime:
    # ORT's int8 kernels are not exact on every CPU (garbage on AMX/VNNI in 1.22-1.24, microsoft/onnxruntime#26324;
    # int16 saturation of U8S8 products without VNNI, e.g. AVX2-only CPUs), so a reference made with them made the
    # smoke's parity pass or fail by the machine it ran on (tests/test_ort_int8.py).
    ref, sf, sq = Int8Reference(q_path), _ort(f32["onnx"]), _ort(q_path)
    probe = feeds[: min(2, len(feeds))]
    ort_off = max(float(np.abs(a - b).max()) for fd in probe for a, b in zip(sq.run(None, fd), ref.run(None, fd)))
    ort_exact = ort_off <= 1e-3
    # int8 vs f32 over all calibration frames with ORT where its kernels are exact here (the reference takes
    # seconds a frame), else with the reference on the first few
    q_run, diff_feeds = (sq, feeds) if ort_exact else (ref, probe)
    diff = max(float(np.abs(a - b).max()) for fd in diff_feeds
               for a, b in zip(sf.run(None, fd)[:2], q_run.run(None, fd)[:2]))
    if not ort_exact:
        print(f"[quantize] warning: onnxruntime's int8 kernels on this CPU differ from the ONNX reference by "
              f"{ort_off:.3g} (U8S8 saturation without VNNI, or microsoft/onnxruntime#26324); its int8 numbers "
              "here are not tract's")
    print(f"[quantize] {q_path}: int8 vs f32 waypoints max abs diff {diff:.3f} m over {len(diff_feeds)} frames "
          f"({'onnxruntime' if ort_exact else 'ONNX reference evaluator'})")
    if raw_frames:
        run_int8 = lambda i, s, t: ref.run(None, {"image": i.numpy(), "speed": s.numpy(), "target_points": t.numpy()})
        # tract runs the same integer arithmetic: it agrees with the reference to float rounding (bundle 6e-6 m,
        # features exactly: on AVX-512 VNNI, on AVX2-only (qemu-x86_64 -cpu Haswell) and under qemu-aarch64), so the
        # f32 graphs' tolerance applies.
        write_parity_vectors(os.path.join(out_dir, f"{name}.parity.json"), raw_frames, run_int8, ref.name, 1e-3)
    prov = dict(provenance)
    prov.setdefault("generator", "models/distill/export.py (onnxruntime quantize_static, QOperator, per-tensor)")
    prov.setdefault("commit", git_commit())
    prov["quantized_from"] = os.path.basename(f32["onnx"])
    prov["calibration_frames"] = len(feeds)
    prov["int8_vs_f32_max_abs_diff_m"] = diff
    prov["onnxruntime_int8_exact_here"] = ort_exact
    man = write_driving_manifest(q_path, name, "student", "int8", f32["features_shape"], prov, description, metrics)
    return {"onnx": q_path, "manifest": man, "int8_vs_f32_max_abs_diff": diff}


def ort_latency(onnx_paths: dict, runs: int = 50, threads: int = 1) -> dict:
    """Median ONNX Runtime latency (ms) of driving graphs on one image, round-robin, for the side-by-side table."""
    import time
    rng = np.random.default_rng(0)
    feed = {"image": rng.standard_normal((1, 3, IMG_H, IMG_W)).astype(np.float32),
            "speed": np.array([[5.0]], np.float32), "target_points": np.array([[[15, 0.5], [35, 1.0]]], np.float32)}
    sess = {k: _ort(p, threads) for k, p in onnx_paths.items()}
    times: dict = {k: [] for k in sess}
    for r in range(runs + 3):
        for k, s in sess.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            if r >= 3:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


# The resampler's inputs, in order: the fields a snapshot keeps at a keyframe tick (src/events/snapshot.rs).
LANGUAGE_CONTEXT = ("features", "speed", "speed_prev", "target_points", "path", "speed_wps")


def example_language_context(feat_shape: list[int]) -> tuple:
    return (torch.randn(*feat_shape), torch.tensor([[6.0]]), torch.tensor([[5.0]]), torch.tensor([[[15.0, 0.5], [35.0, 1.0]]]),
            torch.stack([torch.arange(1.0, N_PATH + 1), torch.zeros(N_PATH)], -1)[None],
            torch.stack([torch.arange(1.0, N_SPEED + 1) * 1.5, torch.zeros(N_SPEED)], -1)[None])


def write_language_parity(language, contexts: list[tuple], path: str) -> None:
    """`rtvla model check <prefix>.toml` input: keyframe contexts + PyTorch's greedy tokens and first-step logits."""
    cases = []
    with torch.no_grad():
        for ctx in contexts:
            lat = language.resampler(*ctx)
            k, v = language.decoder.empty_cache(1)
            logits0, _, _ = language.decoder.step(torch.tensor([[1]]), torch.tensor([0]), lat, k, v)
            ids = language.generate(ctx)[0]
            cases.append({n: t.reshape(-1).tolist() for n, t in zip(LANGUAGE_CONTEXT, ctx)}
                         | {"tokens": [int(i) for i in ids], "first_logits": logits0[0].tolist()})
    with open(path, "w") as fh:
        json.dump({"reference": "pytorch", "tolerance": 1e-3, "cases": cases}, fh)
    print(f"[export] wrote {path} ({len(cases)} keyframe contexts, pytorch)")


def export_language(language, feat_shape: list[int], out_dir: str, provenance: dict | None = None,
                    prefix: str = "language", contexts: list[tuple] | None = None,
                    features_from: list[str] | None = None) -> dict:
    """Export resampler + one decoder step with KV cache; parity vs PyTorch; writes <prefix>.toml.

    `features_from`: the driving graphs (ONNX paths) whose features this branch reads; their sha256 go into the
    manifest, and `rtvla explain` refuses snapshots that another graph wrote."""
    os.makedirs(out_dir, exist_ok=True)
    language = language.eval()
    dec = language.decoder
    res_path = os.path.join(out_dir, f"{prefix}_resampler.onnx")
    step_path = os.path.join(out_dir, f"{prefix}_step.onnx")
    ctx = example_language_context(feat_shape)
    with torch.no_grad():
        torch.onnx.export(language.resampler, ctx, res_path, opset_version=OPSET, dynamo=False,
                          input_names=list(LANGUAGE_CONTEXT), output_names=["latents"])
        lat = language.resampler(*ctx)
        k, v = dec.empty_cache(1)
        ex = (torch.tensor([[1]], dtype=torch.long), torch.tensor([0], dtype=torch.long), lat, k, v)
        torch.onnx.export(StepGraph(dec), ex, step_path, opset_version=OPSET, dynamo=False,
                          input_names=["token", "pos", "latents", "past_k", "past_v"],
                          output_names=["logits", "new_k", "new_v"])
    _onnx_check(res_path)
    _onnx_check(step_path)
    # parity: run a few greedy steps through both
    rs, ss = _ort(res_path), _ort(step_path)
    max_diff = 0.0
    with torch.no_grad():
        lat_o = rs.run(None, {n: t.numpy() for n, t in zip(LANGUAGE_CONTEXT, ctx)})[0]
        max_diff = max(max_diff, float(np.abs(lat_o - lat.numpy()).max()))
        tok = torch.tensor([[1]])
        ko, vo = k.numpy(), v.numpy()
        for p in range(4):
            pos = torch.tensor([p])
            lw, k, v = dec.step(tok, pos, lat, k, v)
            lo, ko, vo = ss.run(None, {"token": tok.numpy(), "pos": pos.numpy(), "latents": lat.numpy(),
                                       "past_k": ko, "past_v": vo})
            max_diff = max(max_diff, float(np.abs(lo - lw.numpy()).max()), float(np.abs(ko - k.numpy()).max()))
            tok = lw.argmax(-1, keepdim=True)
    print(f"[export] language branch parity PyTorch vs onnxruntime (4 cached steps), max abs diff {max_diff:.3e}")
    write_language_parity(language, [ctx] + list(contexts or []), os.path.join(out_dir, f"{prefix}.parity.json"))
    prov = dict(provenance or {})
    prov.setdefault("generator", "models/distill/export.py")
    prov.setdefault("commit", git_commit())
    prov["opset"] = OPSET
    prov["parity_max_abs_diff_ort"] = max_diff
    man = os.path.join(out_dir, f"{prefix}.toml")
    kshape = list(k.shape)
    text = "# Student language branch: resampler (a snapshot keyframe: features, speed now and speed_prev_s before,\n"
    text += "# target points, plan -> latents)\n"
    text += "# + one decoder step with explicit KV cache.\n"
    text += "# Decode: pos=0 token=<bos>, zero caches; feed back new_k/new_v and argmax(logits) with pos+1 until <eos>.\n"
    text += _table("model", {"name": f"student-{prefix}", "kind": "language",
                             "resampler_onnx": os.path.basename(res_path),
                             "resampler_sha256": sha256(res_path), "step_onnx": os.path.basename(step_path),
                             "step_sha256": sha256(step_path), "precision": "f32"})
    text += "\n" + _table("io", {"features": feat_shape, "speed": [1, 1], "speed_prev": [1, 1],
                                 "speed_prev_s": PREV_STEPS / 20.0, "target_points": [1, 2, 2],
                                 "path": [1, N_PATH, 2], "speed_wps": [1, N_SPEED, 2], "latents": list(lat.shape), "token": [1, 1], "pos": [1],
                                 "kv_cache": kshape, "logits": [1, len(VOCAB)], "max_len": TEXT_LEN,
                                 "features_from": [sha256(p) for p in features_from or []]})
    text += "\n" + _table("vocab", {"tokens": VOCAB.itos, "pad": 0, "bos": 1, "eos": 2})
    text += "\n" + _table("provenance", prov)
    with open(man, "w") as f:
        f.write(seal_manifest(text))
    print(f"[export] wrote {man}")
    return {"manifest": man, "max_abs_diff": max_diff}


# f16 vs the f32 reference on the parity frames: tract's f32_to_f16 transform rounds every weight and activation to
# 11 significant bits, and its arm64 fp16 kernels also accumulate in f16. Measured on the bundled student
# (2026-11-30): max |diff| 0.033 m on waypoints and 0.007 on features with the arm64 fp16 kernels (qemu -cpu
# cortex-a76), 0.014 m / 0.007 with x86's scalar f16. Tolerances ~3x and ~7x that; the f32 graph is held to 1e-3.
F16_TOLERANCE_M = 0.1
F16_FEATURES_TOLERANCE = 0.05


def derive_f16(f32_manifest: str, name: str | None = None) -> str:
    """The f16 variant of an exported f32 driving graph: the same ONNX file (same sha256), a manifest with precision
    "f16" — the runtime applies tract's f32_to_f16 transform before optimising (src/model/student.rs) — and parity
    vectors that hold tract's f16 run to the f32 PyTorch reference within F16_TOLERANCE_M. Returns the manifest."""
    import tomllib
    with open(f32_manifest, "rb") as fh:
        m = tomllib.load(fh)
    info, out_dir = m["model"], os.path.dirname(os.path.abspath(f32_manifest))
    name = name or f"{info['name']}_f16"
    feat = next(t["shape"] for t in m["outputs"] if t["role"] == "features")
    prov = dict(m.get("provenance", {}))
    prov.update({"generator": "models/distill/export.py derive_f16", "derived_from": os.path.basename(f32_manifest),
                 "transform": "tract f32_to_f16 after declutter, before optimise; graph inputs/outputs stay f32",
                 "exported_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    man = write_driving_manifest(os.path.join(out_dir, info["onnx"]), name, info["kind"], "f16", feat, prov,
                                 info.get("description", "").rstrip(".") + ", run in f16 by tract (arm64 fp16 kernels).",
                                 None)
    with open(os.path.join(out_dir, f"{info['name']}.parity.json")) as fh:
        vec = json.load(fh)
    vec.update({"reference": f"{vec['reference']} (f32 graph; tract runs it in f16)", "tolerance": F16_TOLERANCE_M,
                "features_tolerance": F16_FEATURES_TOLERANCE})
    with open(os.path.join(out_dir, f"{name}.parity.json"), "w") as fh:
        json.dump(vec, fh)
    print(f"[export] wrote {man} and {name}.parity.json (f16 tolerance {F16_TOLERANCE_M} m)")
    return man


def main() -> None:
    from distill import load_ckpt
    from student import Student
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driving-ckpt", help="student_s1.pt (driving branch)")
    ap.add_argument("--derive-f16", metavar="MANIFEST", help="only write the f16 variant of an exported f32 manifest")
    ap.add_argument("--language-ckpt", help="student_s2.pt (language branch)")
    ap.add_argument("--out", help="output directory (with --driving-ckpt)")
    ap.add_argument("--name", default="student")
    a = ap.parse_args()
    if a.derive_f16:
        derive_f16(a.derive_f16)
        return
    if not (a.driving_ckpt and a.out):
        ap.error("--driving-ckpt and --out are required (or --derive-f16 MANIFEST)")
    st = Student()
    load_ckpt(a.driving_ckpt, {"driving": st.driving})
    r = export_driving(st.driving, a.out, a.name)
    if a.language_ckpt:
        load_ckpt(a.language_ckpt, {"language": st.language})
        export_language(st.language, r["features_shape"], a.out)


if __name__ == "__main__":
    main()
