"""Seed study of stage 1: does distillation make the student drive better than the ablation beyond seed noise?

One distilled and one ablation run of stage 1 (driving) per seed (the seed sets the student's initialisation and the
batch order; same data, teacher, steps and loss weights as pipeline.py), each exported and driven closed loop by the
runtime over held-out runs (`rtvla sim eval`); prints the driving score per seed and each arm's mean ± std. The
teacher's targets are computed once for all runs (`distill.cache_teacher_targets`): the teacher's forward is most of
stage 1's time, so a run takes ~1.5 min instead of ~11 on this machine, and an eval of 144 runs ~2 min.

  python seeds.py --run-dir /work/distill-runs/t3 --data /work/distill-runs/full/dataset --seeds 0..3 \\
      --out /work/distill-runs/seeds
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import DrivingData  # noqa: E402
from distill import (cache_teacher_targets, eval_driving, load_ckpt, teacher_config_of,  # noqa: E402
                     train_student_driving)
from export import export_driving  # noqa: E402
from pipeline import PRESETS, ROOT, TEACHER, find_rtvla  # noqa: E402
from student import Student  # noqa: E402
from teacher import Teacher  # noqa: E402


def span(text: str) -> range:
    a, b = text.split("..")
    return range(int(a), int(b))


def closed_loop(rtvla: str, manifest: str, seeds: str, out_json: str) -> float:
    """Driving score of a driving manifest over the held-out scenarios x `seeds` (rtvla sim eval, simulated time)."""
    # cwd = the repository: sim eval reads boards/host-sim.toml under the working directory
    subprocess.run([rtvla, "sim", "eval", "--policy", "model", "--model", manifest, "--scenarios", "held-out",
                    "--seeds", seeds, "--json", out_json, "--log", "warn"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(out_json) as f:
        return float(json.load(f)["driving_score"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a pipeline run directory holding teacher.pt")
    ap.add_argument("--data", required=True, help="the training dataset that run used")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0..3", help="stage-1 seeds A..B (exclusive)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full", help="steps, batch and lr of stage 1")
    ap.add_argument("--eval-seeds", default="1000000..1000012", help="held-out seeds of each scenario (12 x 12 runs)")
    ap.add_argument("--rtvla", help="rtvla binary (default: target/release/rtvla, $RTVLA_BIN)")
    a = ap.parse_args()
    cfg = PRESETS[a.preset]
    rtvla = find_rtvla(a.rtvla)
    os.makedirs(a.out, exist_ok=True)
    data = DrivingData(a.data)
    tr, va = data.split()
    teacher_pt = os.path.join(a.run_dir, "teacher.pt")
    if not os.path.exists(teacher_pt):
        sys.exit(f"seeds: no teacher checkpoint {teacher_pt}")
    teacher = Teacher(**teacher_config_of(teacher_pt, TEACHER))
    load_ckpt(teacher_pt, {"teacher": teacher})
    cache_pt = os.path.join(a.out, "teacher_targets.pt")
    if os.path.exists(cache_pt):
        cached = torch.load(cache_pt, weights_only=True)
    else:
        cached = cache_teacher_targets(teacher, data)
        torch.save(cached, cache_pt)

    results_path = os.path.join(a.out, "seeds.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    for seed in span(a.seeds):
        for arm in ("distilled", "ablation"):
            key = f"{arm}_{seed}"
            if key in results:  # resumable: a finished (arm, seed) is not run again
                continue
            t0 = time.time()
            torch.manual_seed(seed)
            st = Student()
            stage = {"steps": cfg["s1_steps"], "batch": cfg["batch"], "lr": cfg["lr_student"], "seed": 1 + seed,
                     "eval_every": 10**9, "ckpt_every": cfg["ckpt_every"]}
            train_student_driving(st, teacher if arm == "distilled" else None, data, tr, va, a.out, stage, name=key,
                                  cached=cached if arm == "distilled" else None)
            val = eval_driving(st.driving, data, va)
            exp = os.path.join(a.out, key)
            r = export_driving(st.driving, exp, "student")
            ds = closed_loop(rtvla, r["manifest"], a.eval_seeds, os.path.join(exp, "eval.json"))
            results[key] = {"arm": arm, "seed": seed, "driving_score": ds, "val_wp_l2_m": val,
                            "seconds": time.time() - t0}
            print(f"[seeds] {arm} seed {seed}: DS {ds:.1f}, validation waypoints {val:.3f} m "
                  f"({time.time() - t0:.0f} s)", flush=True)
            with open(results_path, "w") as f:
                json.dump(results, f, indent=2)

    print(f"\nstage-1 seed study, closed loop over held-out seeds {a.eval_seeds} (all 12 scenarios)")
    print(f"{'seed':>6} {'distilled':>10} {'ablation':>10}")
    for seed in span(a.seeds):
        d, b = (results.get(f"{arm}_{seed}", {}).get("driving_score", float("nan")) for arm in ("distilled", "ablation"))
        print(f"{seed:>6} {d:>10.1f} {b:>10.1f}")
    for arm in ("distilled", "ablation"):
        v = [r["driving_score"] for r in results.values() if r["arm"] == arm]
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        print(f"{arm:>10}: mean {statistics.mean(v):.1f} ± {sd:.1f} (std over {len(v)} seeds)")
    pairs = [(results[f"distilled_{s}"]["driving_score"], results[f"ablation_{s}"]["driving_score"])
             for s in sorted({r["seed"] for r in results.values()})
             if f"distilled_{s}" in results and f"ablation_{s}" in results]
    if len(pairs) > 1:
        p = paired_summary([d for d, _ in pairs], [b for _, b in pairs])
        print(f"distilled − ablation over {p['n']} paired seeds: {p['mean']:+.1f} ± {p['std']:.1f} (standard error "
              f"{p['se']:.2f}, paired t {p['t']:.2f}); ahead in {p['ahead']} of {p['n']} (sign test, two-sided "
              f"p = {p['sign_p']:.3f})")


def paired_summary(distilled: list[float], ablation: list[float]) -> dict:
    """Paired seed-by-seed comparison of two arms: mean and std of the differences, the paired t statistic and an
    exact two-sided sign test (ties count as not ahead) -- with ~3 DS of noise per seed a mean alone says little."""
    diff = [d - b for d, b in zip(distilled, ablation)]
    n = len(diff)
    mean, std = statistics.mean(diff), statistics.stdev(diff)
    se = std / math.sqrt(n)
    ahead = sum(x > 0 for x in diff)
    k = max(ahead, n - ahead)
    sign_p = min(1.0, 2 * sum(math.comb(n, j) for j in range(k, n + 1)) / 2 ** n)
    return {"n": n, "mean": mean, "std": std, "se": se, "t": mean / se if se > 0 else float("inf"), "ahead": ahead,
            "sign_p": sign_p}


if __name__ == "__main__":
    main()
