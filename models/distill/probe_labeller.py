"""What a perfect labeller would give the on-policy rounds (issue 22): a run's on-policy student rounds again, from
the same stage-1 student, but the privileged EXPERT labels the student's drives (its waypoints and commentary; the
teacher's pooled features and query states stay as the third and fourth distillation levels). Not the real-world
form -- on a car there is no privileged expert -- but the bound on what any teacher's labels can add to these rounds.

The rollout's frames already carry the expert's labels (`rtvla sim dataset --policy model` records them for every
state the model visits); `closedloop.onpolicy_student` replaces them with the teacher's, this probe puts them back.
Round 0 (the stage-1 student) and round 1's rollout are those of RUN (same policy, same seeds), copied, not redone.
The kept round is then driven on the card's 48 held-out runs (closedloop.CARD_SEEDS).

  python probe_labeller.py --run /work/distill-runs/closedloop --out /work/distill-runs/oracle \\
      [--set onpolicy_steps=1500 --set student_onpolicy_frac=0.5 ...]
      [--set onpolicy_focus_frames=2000 --focus parked_obstacle,obstacle_two_ways]
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closedloop as cl  # noqa: E402
from data import DrivingData  # noqa: E402
from distill import DistillHeads, ckpt_has, load_ckpt  # noqa: E402
from pipeline import PRESETS, START_BOOST, apply_sets, find_rtvla, student_config  # noqa: E402
from seeds_closedloop import kept_teacher  # noqa: E402
from student import Student  # noqa: E402


def seed_from(run: str, out: str, stage1: str | None = None) -> None:
    """`out` starts where RUN's on-policy rounds started: its dataset, stage-1 student, round 0 and round 1's drive.
    With `stage1` (another stage-1 checkpoint on RUN's dataset) only the dataset: round 0 and 1 are then this one's."""
    os.makedirs(os.path.join(out, "onpolicy", "r1"), exist_ok=True)
    if not os.path.exists(os.path.join(out, "dataset")):
        os.symlink(os.path.abspath(os.path.join(run, "dataset")), os.path.join(out, "dataset"))
    if not os.path.exists(os.path.join(out, "student_s1.pt")):
        shutil.copy(stage1 or os.path.join(run, "student_s1.pt"), os.path.join(out, "student_s1.pt"))
    if stage1:
        return
    for src, dst in (("onpolicy/r0", "onpolicy/r0"), ("onpolicy/r1/data", "onpolicy/r1/data")):
        if not os.path.exists(os.path.join(out, dst)):
            shutil.copytree(os.path.join(run, src), os.path.join(out, dst))


def expert_labelled(teacher_labels):
    """`closedloop.teacher_labels` with the expert's waypoints and commentary in place of the teacher's."""
    def labels(teacher, part: DrivingData) -> dict:
        lab = teacher_labels(teacher, part)
        lab.update(path=part.path.clone(), speed_wps=part.speed_wps.clone(), tokens=part.tokens.clone())
        return lab
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a closedloop-preset run directory (its DAgger teacher, stage 1)")
    ap.add_argument("--out", required=True, help="this probe's run directory (resumable)")
    ap.add_argument("--rtvla", help="the rtvla binary that drives the rounds (default: pipeline.find_rtvla's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a closedloop value")
    ap.add_argument("--focus", help="with --set onpolicy_focus_frames=N: the focus rollouts drive these scenarios "
                                    "(e.g. parked_obstacle,obstacle_two_ways) instead of the round's weakest")
    ap.add_argument("--stage1", help="start from this stage-1 checkpoint (trained on RUN's dataset, e.g. with "
                                     "--set student_aux_weight) instead of RUN's; rounds 0 and 1 are driven anew")
    a = ap.parse_args()
    cfg = apply_sets(dict(PRESETS["closedloop"], start_boost=START_BOOST), a.set)
    rtvla = find_rtvla(a.rtvla)
    torch.manual_seed(0)
    seed_from(a.run, a.out, a.stage1)
    data = DrivingData(os.path.join(a.out, "dataset"))
    tr, va = data.split()
    va = va[: cfg["val_limit"]]
    teacher = kept_teacher(a.run)
    student = Student(driving=student_config(cfg))
    heads = DistillHeads(student.driving.cfg["feat_dim"], student.driving.cfg["dim"], teacher.dim)
    s1 = os.path.join(a.out, "student_s1.pt")
    # a stage 1 trained without a teacher (`--stage1`) saved no distillation heads: the rounds start them new
    load_ckpt(s1, {"driving": student.driving, "heads": heads} if ckpt_has(s1, "heads") else {"driving": student.driving})
    cl.teacher_labels = expert_labelled(cl.teacher_labels)
    if a.focus:
        cl.weakest_scenarios = lambda _eval_json, _k: a.focus.split(",")
    rounds, _, _ = cl.onpolicy_student(student, teacher, data, tr, va, a.out, rtvla, cfg,
                                       cl.no_teacher_targets(len(data), teacher.dim), heads)
    best = cl.load_state(a.out)["student_best_round"]
    pol = os.path.join(a.out, "onpolicy", f"r{best}", "policy", "student.toml")
    card = cl.eval_ds(rtvla, pol, os.path.join(a.out, "card_eval.json"), "held-out", cl.CARD_SEEDS)
    print(json.dumps({"rounds_ds": [round(r["driving_score"], 1) for r in rounds], "kept": best,
                      "card_ds": round(card["driving_score"], 1)}))


if __name__ == "__main__":
    main()
