"""Export the student to ONNX (opset 17, TorchScript exporter: dynamo=False) with manifests, and check parity.

Driving graph (`student.onnx` + `student.toml`): the runtime contract of src/model/manifest.rs —
  inputs image [1,3,128,256], speed [1,1], target_points [1,2,2]; outputs path [1,20,2], speed_wps [1,10,2],
  features [1,N,C].
Language branch (`language_resampler.onnx`, `language_step.onnx` + `language.toml`): features -> latents, and one decoder
step with an explicit fixed-size KV cache in/out (token [1,1] i64, pos [1] i64, latents, past_k, past_v -> logits,
new_k, new_v). Parity: PyTorch vs onnxruntime on random and (if given) real inputs; max abs diff printed and returned.

    python export.py --ckpt RUN/student_s2.pt --driving-ckpt RUN/student_s1.pt --out DIR [--name NAME]
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

from data import IMG_H, IMG_W, MEAN, N_PATH, N_SPEED, STD, TEXT_LEN, VOCAB

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
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # JSON string escaping is valid TOML basic-string escaping


def _table(name: str, d: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items() if v is not None)


def _onnx_check(path: str) -> None:
    import onnx
    onnx.checker.check_model(onnx.load(path))


def _ort(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def export_driving(driving, out_dir: str, name: str = "student", provenance: dict | None = None,
                   description: str = "", real_inputs: list[dict] | None = None, metrics: dict | None = None) -> dict:
    """Export the driving graph + manifest; returns {'onnx','manifest','max_abs_diff', 'features_shape'}."""
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
    man = os.path.join(out_dir, f"{name}.toml")
    prov = dict(provenance or {})
    prov.setdefault("generator", "models/distill/export.py")
    prov.setdefault("commit", git_commit())
    prov.setdefault("exported_utc", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    prov["opset"] = OPSET
    prov["parity_max_abs_diff_ort"] = max_diff
    prov["config"] = json.dumps(driving.cfg)
    text = f"# Distilled student driving graph (models/distill). Regenerate with models/distill/pipeline.py.\n"
    text += _table("model", {"name": name, "kind": "student", "onnx": f"{name}.onnx", "sha256": sha256(onnx_path),
                             "precision": "f32", "fixture": False, "description": description})
    specs_in = [("image", "image", [1, 3, IMG_H, IMG_W]), ("speed", "speed", [1, 1]),
                ("target_points", "target_points", [1, 2, 2])]
    specs_out = [("path", "path", [1, N_PATH, 2]), ("speed_wps", "speed_wps", [1, N_SPEED, 2]),
                 ("features", "features", feat_shape)]
    for kind, specs in (("inputs", specs_in), ("outputs", specs_out)):
        for n, role, shape in specs:
            text += f"\n[[{kind}]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in
                                                 {"name": n, "role": role, "dtype": "f32", "shape": shape}.items())
    text += "\n" + _table("preprocess", {"mean": list(MEAN), "std": list(STD)})
    text += "\n" + _table("provenance", prov)
    if metrics:
        text += "\n" + _table("metrics", metrics)
    with open(man, "w") as f:
        f.write(text)
    print(f"[export] wrote {man}")
    return {"onnx": onnx_path, "manifest": man, "max_abs_diff": max_diff, "features_shape": feat_shape}


def export_language(language, feat_shape: list[int], out_dir: str, provenance: dict | None = None) -> dict:
    """Export resampler + one decoder step with KV cache; parity vs PyTorch; writes language.toml."""
    os.makedirs(out_dir, exist_ok=True)
    language = language.eval()
    dec = language.decoder
    res_path = os.path.join(out_dir, "language_resampler.onnx")
    step_path = os.path.join(out_dir, "language_step.onnx")
    feats = torch.randn(*feat_shape)
    with torch.no_grad():
        torch.onnx.export(language.resampler, (feats,), res_path, opset_version=OPSET, dynamo=False,
                          input_names=["features"], output_names=["latents"])
        lat = language.resampler(feats)
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
        lat_o = rs.run(None, {"features": feats.numpy()})[0]
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
    prov = dict(provenance or {})
    prov.setdefault("generator", "models/distill/export.py")
    prov.setdefault("commit", git_commit())
    prov["opset"] = OPSET
    prov["parity_max_abs_diff_ort"] = max_diff
    man = os.path.join(out_dir, "language.toml")
    kshape = list(k.shape)
    text = "# Student language branch: resampler (features -> latents) + one decoder step with explicit KV cache.\n"
    text += "# Decode: pos=0 token=<bos>, zero caches; feed back new_k/new_v and argmax(logits) with pos+1 until <eos>.\n"
    text += _table("model", {"name": "student-language", "kind": "language", "resampler_onnx": "language_resampler.onnx",
                             "resampler_sha256": sha256(res_path), "step_onnx": "language_step.onnx",
                             "step_sha256": sha256(step_path), "precision": "f32"})
    text += "\n" + _table("io", {"features": feat_shape, "latents": list(lat.shape), "token": [1, 1], "pos": [1],
                                 "kv_cache": kshape, "logits": [1, len(VOCAB)], "max_len": TEXT_LEN})
    text += "\n" + _table("vocab", {"tokens": VOCAB.itos, "pad": 0, "bos": 1, "eos": 2})
    text += "\n" + _table("provenance", prov)
    with open(man, "w") as f:
        f.write(text)
    print(f"[export] wrote {man}")
    return {"manifest": man, "max_abs_diff": max_diff}


def main() -> None:
    from distill import load_ckpt
    from student import Student
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driving-ckpt", required=True, help="student_s1.pt (driving branch)")
    ap.add_argument("--language-ckpt", help="student_s2.pt (language branch)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="student")
    a = ap.parse_args()
    st = Student()
    load_ckpt(a.driving_ckpt, {"driving": st.driving})
    r = export_driving(st.driving, a.out, a.name)
    if a.language_ckpt:
        load_ckpt(a.language_ckpt, {"language": st.language})
        export_language(st.language, r["features_shape"], a.out)


if __name__ == "__main__":
    main()
