"""Measure seconds per training step of each stage at a batch size (to size the full run).

    python timing.py --data DIR [--batch 32] [--steps 3] [--preset closedloop] [--only teacher,ablation_s1]

The students are the preset's size and speed cap (pipeline.student_config), and the student's stage 2 has the
preset's KL weight to the teacher (s2_w_kl). Each stage runs 1, `steps` and 2·`steps` steps from scratch; the
figure is the difference of the last two, so what a stage does once (stage 2's plan pass over every frame,
distill.PlannedData; loading) does not count.
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
from pipeline import PRESETS, TEACHER, student_config


def per_step(train, ckpt: str, steps: int) -> float:
    """Seconds per step of `train(n)` (a stage run from scratch for n steps): the difference of a run of 2·steps and
    one of `steps`, after a one-step warm-up, so that what a stage does once (stage 2's plan pass, loading) cancels."""
    took = {}
    for n in (1, steps, 2 * steps):
        t0 = time.time()
        train(n)
        took[n] = time.time() - t0
        os.remove(ckpt)
    return (took[2 * steps] - took[steps]) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--only", help="comma-separated stages to time")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full", help="the students' size and stage 2 (KL)")
    a = ap.parse_args()
    d = DrivingData(a.data)
    tr, va = d.split()
    res = {"preset": a.preset, "batch": a.batch, "torch_threads": torch.get_num_threads(), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as out:
        pre = PRESETS[a.preset]
        t, s, ab = Teacher(**TEACHER), Student(driving=student_config(pre)), Student(driving=student_config(pre))
        # one warm-up step is included in `steps`+1 and excluded from the per-step figure
        for name, fn in [("teacher", lambda c: train_teacher(t, d, tr, va[:1], out, c)),
                         ("student_s1", lambda c: train_student_driving(s, t, d, tr, va[:1], out, c)),
                         ("student_s2", lambda c: train_student_language(s, t, d, tr, va[:1], out,
                                                                         dict(c, w_kl=pre["s2_w_kl"]))),
                         ("ablation_s1", lambda c: train_student_driving(ab, None, d, tr, va[:1], out, c, "ablation_s1")),
                         ("ablation_s2", lambda c: train_student_language(ab, None, d, tr, va[:1], out, c, "ablation_s2"))]:
            if a.only and name not in a.only.split(","):
                continue
            cfg = {"batch": a.batch, "lr": 1e-4, "eval_every": 10**9, "ckpt_every": 10**9}
            res[name] = per_step(lambda n: fn(dict(cfg, steps=n)), os.path.join(out, f"{name}.pt"), a.steps)
    res["loadavg_after"] = os.getloadavg()
    print(json.dumps(res, indent=2))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
