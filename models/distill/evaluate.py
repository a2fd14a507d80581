"""Python-side measurements of the bundled models for `cargo xtask eval` (the Rust side measures driving score and
tract latency):

  * commentary on held-out frames: every exported language branch decodes greedily with its KV cache through
    onnxruntime, reading the `features` of its driving graph (so the int8 student's commentary reads int8 features);
    the teacher writes its commentary with its own decoder (teacher.pt). A sentence counts as action+object correct
    when its expert template maps to the frame's (action, object) labels.
  * ONNX Runtime latency of the driving graphs (1 thread, round-robin, median) for the tract-vs-ORT columns.

    python evaluate.py --models models/student --data HELDOUT_DATASET --json out.json [--limit 300]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from data import ACTIONS, BOS, EOS, OBJECTS, TEXT_LEN, VOCAB, DrivingData, Vocab, template_key  # noqa: E402
import export  # noqa: E402
from export import _ort  # noqa: E402

# driving graph -> the language branch that reads its features
STUDENTS = {"student": "language", "student_int8": "language", "student_nodistill": "language_nodistill"}


def decode_ort(res, step, ctx: dict, kv_shape: list[int]) -> list[int]:
    """ctx: the resampler's inputs (export.LANGUAGE_CONTEXT) as numpy arrays."""
    lat = res.run(None, ctx)[0]
    k = np.zeros(kv_shape, np.float32)
    v = np.zeros(kv_shape, np.float32)
    tok, out = BOS, [BOS]
    for p in range(TEXT_LEN - 1):
        logits, k, v = step.run(None, {"token": np.array([[tok]], np.int64), "pos": np.array([p], np.int64),
                                       "latents": lat, "past_k": k, "past_v": v})
        tok = int(logits[0].argmax())
        out.append(tok)
        if tok == EOS:
            break
    return out


def score(texts: list[str], data: DrivingData, idx: np.ndarray) -> dict:
    exact = ao = act = obj = 0
    for text, i in zip(texts, idx):
        want = (ACTIONS[int(data.action[i])], OBJECTS[int(data.object[i])])
        got = data.template_labels.get(template_key(text))
        exact += text == VOCAB.decode(data.tokens[i])
        ao += got == want
        act += got is not None and got[0] == want[0]
        obj += got is not None and got[1] == want[1]
    n = max(1, len(texts))
    return {"exact": exact / n, "action_object": ao / n, "action": act / n, "object": obj / n, "n": len(texts),
            "examples": [{"want": VOCAB.decode(data.tokens[i]), "got": t} for t, i in list(zip(texts, idx))[:5]]}


def manifest_vocab(path: str) -> Vocab:
    """The vocabulary a language branch was exported with (token ids are only meaningful against it)."""
    import tomllib
    with open(path, "rb") as f:
        return Vocab(tomllib.load(f)["vocab"]["tokens"])


def student_commentary(models: str, name: str, lang: str, data: DrivingData, idx: np.ndarray) -> dict | None:
    drv_path = os.path.join(models, f"{name}.onnx")
    res_path = os.path.join(models, f"{lang}_resampler.onnx")
    if not (os.path.exists(drv_path) and os.path.exists(res_path)):
        return None
    drv, res, step = _ort(drv_path), _ort(res_path), _ort(os.path.join(models, f"{lang}_step.onnx"))
    kv = [d if isinstance(d, int) else 1 for d in step.get_inputs()[3].shape]
    vocab = manifest_vocab(os.path.join(models, f"{lang}.toml"))
    texts = []
    for i in idx:
        b = data.batch([int(i)])
        ego = {"speed": b["speed"].numpy(), "target_points": b["target_points"].numpy()}
        path, speed_wps, feats = drv.run(None, dict(ego, image=b["image"].numpy()))
        ctx = dict(ego, features=feats, path=path, speed_wps=speed_wps, speed_prev=b["speed_prev"].numpy())
        texts.append(vocab.decode(decode_ort(res, step, ctx, kv)))
    out = score(texts, data, idx)
    if "int8" in name:
        out["onnxruntime_int8_exact"] = ort_int8_exact(drv, drv_path, data.batch([int(idx[0])]))
    return out


def ort_int8_exact(drv, drv_path: str, b: dict) -> bool:
    """Whether ORT's int8 kernels compute this graph exactly on this CPU (they saturate without VNNI): against the
    ONNX reference evaluator on one frame. When not, the int8 commentary above is ORT's, not what tract would read."""
    feed = {"image": b["image"].numpy(), "speed": b["speed"].numpy(), "target_points": b["target_points"].numpy()}
    off = max(float(np.abs(x - y).max()) for x, y in zip(drv.run(None, feed), export.Int8Reference(drv_path).run(None, feed)))
    if off > 1e-3:
        print(f"[commentary] warning: onnxruntime's int8 kernels differ from the ONNX reference by {off:.3g} on this "
              "CPU (no VNNI?): the int8 commentary is measured on features tract would not produce")
    return off <= 1e-3


def teacher_commentary(models: str, data: DrivingData, idx: np.ndarray) -> dict | None:
    p = os.path.join(models, "teacher.pt")
    if not os.path.exists(p):
        return None
    from teacher import load_exported
    t, ck = load_exported(p)
    # teacher.pt carries its vocabulary since 2026-11-26; older ones were trained on that day's TEMPLATES minus the
    # oncoming-car pair, which no Vocab here rebuilds: their word ids would be misread, so they are not scored.
    if "vocab" not in ck and t.tok.num_embeddings != len(VOCAB):
        print(f"[commentary] teacher: {p} has another vocabulary ({t.tok.num_embeddings} tokens) and none saved: not scored")
        return None
    vocab = Vocab(ck["vocab"]) if "vocab" in ck else VOCAB
    texts = []
    for s in range(0, len(idx), 32):
        b = data.batch(idx[s : s + 32])
        ids, _, _ = t.generate(b["image"], b["speed"], b["target_points"])
        texts += [vocab.decode(g) for g in ids]
    return score(texts, data, idx)


def ort_latency(models: str, names: list[str], runs: int) -> dict:
    paths = {n: os.path.join(models, f"{n}.onnx") for n in names}
    return export.ort_latency({n: p for n, p in paths.items() if os.path.exists(p)}, runs=runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="directory with the exported models")
    ap.add_argument("--data", required=True, help="held-out dataset (rtvla sim dataset --seeds 1000000..)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--limit", type=int, default=300, help="frames scored (evenly spaced over the dataset)")
    ap.add_argument("--ort-runs", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = DrivingData(a.data)
    idx = np.linspace(0, len(data) - 1, min(a.limit, len(data))).round().astype(np.int64)
    out = {"frames": len(idx), "dataset": a.data, "seeds": [min(data.seeds), max(data.seeds)], "commentary": {}}
    t0 = time.time()
    for name, lang in STUDENTS.items():
        r = student_commentary(a.models, name, lang, data, idx)
        if r is not None:
            out["commentary"][name] = r
            print(f"[commentary] {name}: action+object {r['action_object']:.1%}, exact {r['exact']:.1%} "
                  f"({r['n']} held-out frames)", flush=True)
    r = teacher_commentary(a.models, data, idx)
    if r is not None:
        out["commentary"]["teacher"] = r
        print(f"[commentary] teacher: action+object {r['action_object']:.1%}, exact {r['exact']:.1%}", flush=True)
    out["commentary_s"] = time.time() - t0
    out["ort_latency_ms"] = ort_latency(a.models, ["teacher", "teacher_lang", "student", "student_int8", "student_nodistill"],
                                        a.ort_runs)
    out["ort_threads"] = 1
    print(f"[latency] onnxruntime 1 thread, median ms: {out['ort_latency_ms']}")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
