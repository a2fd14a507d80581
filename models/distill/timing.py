"""Measure seconds per training step of each stage at a batch size (to size the full run).

    python timing.py --data DIR [--batch 32] [--steps 3]
"""
import argparse
import json
import os
import tempfile
import time

import torch

from data import DrivingData
from distill import train_student_driving, train_student_language, train_teacher
from student import Student
from teacher import Teacher
from pipeline import TEACHER


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--only", help="comma-separated stages to time")
    a = ap.parse_args()
    d = DrivingData(a.data)
    tr, va = d.split()
    res = {"batch": a.batch, "torch_threads": torch.get_num_threads(), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as out:
        t, s, ab = Teacher(**TEACHER), Student(), Student()
        # one warm-up step is included in `steps`+1 and excluded from the per-step figure
        for name, fn in [("teacher", lambda c: train_teacher(t, d, tr, va[:1], out, c)),
                         ("student_s1", lambda c: train_student_driving(s, t, d, tr, va[:1], out, c)),
                         ("student_s2", lambda c: train_student_language(s, t, d, tr, va[:1], out, c)),
                         ("ablation_s1", lambda c: train_student_driving(ab, None, d, tr, va[:1], out, c, "ablation_s1")),
                         ("ablation_s2", lambda c: train_student_language(ab, None, d, tr, va[:1], out, c, "ablation_s2"))]:
            if a.only and name not in a.only.split(","):
                continue
            cfg = {"batch": a.batch, "lr": 1e-4, "eval_every": 10**9, "ckpt_every": 10**9}
            fn(dict(cfg, steps=1))
            os.remove(os.path.join(out, f"{name}.pt"))
            t0 = time.time()
            fn(dict(cfg, steps=a.steps))
            res[name] = (time.time() - t0) / a.steps
    res["loadavg_after"] = os.getloadavg()
    print(json.dumps(res, indent=2))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
