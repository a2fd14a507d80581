"""Seed study of the closed-loop arms (issue 22): on-policy distilled student vs the ablation, per training seed.

For each seed: the distilled arm repeats what pipeline.py did for the student -- stage 1 on the offline frames (the
expert's ground truth, plus the teacher's targets when the preset's `onpolicy_base_targets` is "teacher"), then the
on-policy rounds (the student drives, the kept DAgger teacher labels what it saw, aggregate, fine-tune; the
best round by its own held-out DS is kept) -- with the seed setting the initialisation, the batch order and the
rollout seeds; the ablation trains the same student on the offline frames only, ground truth only, for as many steps
(closedloop.ablation_steps). Both are exported and driven over `cargo xtask eval`'s held-out runs; the summary is
the paired difference per seed (seeds.paired_summary).

  python seeds_closedloop.py --run-dir /work/distill-runs/cl3 --data DATASET --preset closedloop --seeds 1..3 \\
      --out /work/distill-runs/cl3-seeds [--set KEY=VALUE ...]  (the run's own overrides, as pipeline.py's --set)

Resumable: a finished (arm, seed) is not run again; an unfinished seed's rounds resume like the pipeline's.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closedloop as cl  # noqa: E402
from data import DrivingData  # noqa: E402
from distill import DistillHeads, load_ckpt, student_aux, teacher_config_of, train_student_driving  # noqa: E402
from export import export_driving  # noqa: E402
from pipeline import (PRESETS, START_BOOST, TEACHER, apply_sets, find_rtvla, offline_teacher_targets,  # noqa: E402
                      student_config)
from seeds import closed_loop, paired_summary, span  # noqa: E402
from student import Student  # noqa: E402
from teacher import Teacher  # noqa: E402


def kept_teacher(run_dir: str) -> Teacher:
    """The teacher the run's student learnt from: the kept DAgger round's checkpoint (round 0: the run's teacher.pt)."""
    best = cl.load_state(run_dir).get("teacher_best_round", 0)
    pt = os.path.join(run_dir, "dagger", f"r{best}", "teacher.pt") if best else os.path.join(run_dir, "teacher.pt")
    t = Teacher(**teacher_config_of(pt, TEACHER))
    load_ckpt(pt, {"teacher": t})
    print(f"[seeds] labeller: DAgger round {best} ({pt})")
    return t.eval()


def stage1(cfg: dict, seed: int, steps: int) -> dict:
    """Stage-1 settings of either arm, as pipeline.py's: the seed sets the batch order."""
    return {"steps": steps, "batch": cfg["batch"], "lr": cfg["lr_student"], "seed": 1 + seed, "eval_every": 10**9,
            "ckpt_every": cfg["ckpt_every"], "wp_loss": cfg["wp_loss"], "start_boost": cfg["student_start_boost"],
            **student_aux(cfg)}


def distilled_arm(seed: int, cfg: dict, data, tr, va, teacher, base, out: str, rtvla: str) -> str:
    """Stage 1 + on-policy rounds for one seed under `out`; returns the kept round's exported manifest."""
    torch.manual_seed(seed)
    st = Student(driving=student_config(cfg))
    heads = DistillHeads(st.driving.cfg["feat_dim"], st.driving.cfg["dim"], teacher.dim)
    train_student_driving(st, teacher, data, tr, va, out, stage1(cfg, seed, cfg["s1_steps"]), name="student_s1",
                          cached=base, heads=heads)
    seeded = dict(cfg, rollout_seed0=cfg["rollout_seed0"] + 7_000 * seed)  # each seed drives its own routes
    rounds, _, _ = cl.onpolicy_student(st, teacher, data, tr, va, out, rtvla, seeded, base, heads)
    best = cl.load_state(out)["student_best_round"]
    return rounds[best]["policy"]


def ablation_arm(seed: int, cfg: dict, data, tr, va, out: str) -> str:
    torch.manual_seed(seed)
    st = Student(driving=student_config(cfg))
    train_student_driving(st, None, data, tr, va, out, stage1(cfg, seed, cl.ablation_steps(cfg)), name="ablation_s1")
    return export_driving(st.driving, os.path.join(out, "export"), "student")["manifest"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="the pipeline run whose DAgger teacher labels (closedloop.json)")
    ap.add_argument("--data", required=True, help="the expert dataset that run used")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="1..3", help="training seeds A..B (exclusive); the pipeline's own run is seed 0")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="closedloop")
    ap.add_argument("--eval-seeds", default=cl.CARD_SEEDS, help="held-out seeds per scenario (cargo xtask eval's)")
    ap.add_argument("--rtvla", help="rtvla binary (default: target/release/rtvla, $RTVLA_BIN)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset value, as the run's own pipeline.py --set")
    a = ap.parse_args()
    cfg = apply_sets(dict(PRESETS[a.preset], start_boost=START_BOOST), a.set)
    rtvla = find_rtvla(a.rtvla)
    data = DrivingData(a.data)
    tr, va = data.split()
    va = va[: cfg["val_limit"]]
    teacher = kept_teacher(a.run_dir)
    os.makedirs(a.out, exist_ok=True)
    # as the pipeline's (until 2026-12-04 this study always trained stage 1 on ground truth, whatever the preset
    # said); the teacher's pass is cached under --out, once for every seed
    base = offline_teacher_targets(cfg, teacher, data, os.path.join(a.out, "teacher_targets.pt"))
    results_path = os.path.join(a.out, "seeds.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for seed in span(a.seeds):
        for arm in ("distilled", "ablation"):
            key = f"{arm}_{seed}"
            if key in results:
                continue
            t0 = time.time()
            out = os.path.join(a.out, key)
            os.makedirs(out, exist_ok=True)
            manifest = (distilled_arm(seed, cfg, data, tr, va, teacher, base, out, rtvla) if arm == "distilled"
                        else ablation_arm(seed, cfg, data, tr, va, out))
            ds = closed_loop(rtvla, manifest, a.eval_seeds, os.path.join(out, "eval.json"))
            results[key] = {"arm": arm, "seed": seed, "driving_score": ds, "manifest": manifest,
                            "wall_s": round(time.time() - t0, 1)}
            with open(results_path + ".tmp", "w") as f:
                json.dump(results, f, indent=2)
            os.replace(results_path + ".tmp", results_path)
            print(f"[seeds] {key}: DS {ds:.1f} ({time.time() - t0:.0f} s)", flush=True)
    seeds = sorted({r["seed"] for r in results.values()})
    pairs = [(results[f"distilled_{k}"]["driving_score"], results[f"ablation_{k}"]["driving_score"]) for k in seeds
             if f"distilled_{k}" in results and f"ablation_{k}" in results]
    for (d, b), k in zip(pairs, seeds):
        print(f"seed {k}: distilled {d:.1f}, ablation {b:.1f}, difference {d - b:+.1f}")
    if len(pairs) >= 2:
        print("paired:", json.dumps(paired_summary([d for d, _ in pairs], [b for _, b in pairs])))


if __name__ == "__main__":
    main()
