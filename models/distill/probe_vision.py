"""Does a model look at its camera? (issue 22)

Open loop, on a dataset's frames: each model's plan with the frame's own camera image, and with the image of an
empty road (frames where the expert follows the route with nothing ahead) in its place, same speed and target points.
A model that plans from the speed and the target points alone gives the same plan both ways.

Reported per group of frames (a car < 25 m ahead that the expert slows or stops for; a red light the expert stops
at; an empty road): how far the last speed waypoint reaches -- the expert's, the model's, the model's on the empty
road's image -- and the mean per-frame change of the speed plan and of the path point 10 ahead.

The 2026-11-30 teachers (patchify ViT, vision-only mode) moved their plan by 0.06-0.08 m: they planned from the speed
and the route alone (models/distill/README.md, "The teacher did not look").

  python probe_vision.py --data DATASET --teacher RUN/teacher.pt [--teacher OTHER.pt] [--student RUN/student_s1.pt]
      [--student-speed-cap 0]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import SLOWING_ACTIONS, DrivingData  # noqa: E402
from distill import load_ckpt, teacher_config_of  # noqa: E402
from export import TeacherVisionOnly  # noqa: E402
from pipeline import speed_cap  # noqa: E402
from student import STUDENT_SIZES, Student  # noqa: E402
from teacher import Teacher, load_exported  # noqa: E402

GROUPS = {
    "car ahead, expert slows": lambda r: r["object"] == "car" and r["action"] in SLOWING_ACTIONS
    and r["object_dist"] is not None and r["object_dist"] < 25,
    "red light, expert stops": lambda r: r["object"] == "red_light" and r["action"] in SLOWING_ACTIONS,
    "empty road": lambda r: r["object"] == "none" and r["action"] in ("accelerate", "keep_speed"),
}


def pick(data: DrivingData, keep, n: int) -> np.ndarray:
    """Up to n frames matching `keep`, spread evenly over the dataset."""
    idx = [i for i, r in enumerate(data.records) if keep(r)]
    return np.array(idx[:: max(1, len(idx) // n)][:n], dtype=np.int64)


def teacher_planner(path: str):
    """The teacher in vision-only mode (empty commentary: the mode it drives and labels the students' frames in), from
    a training checkpoint or an export's teacher.pt."""
    if "state" in torch.load(path, map_location="cpu", weights_only=False):
        t, _ = load_exported(path)
    else:
        t = Teacher(**teacher_config_of(path, {}))
        load_ckpt(path, {"teacher": t})
    vision_only = TeacherVisionOnly(t)
    return lambda image, speed, tp: vision_only(image, speed, tp)[:2]


def student_planner(path: str, size: str, cap: float):
    """A student's driving branch from a stage-1 checkpoint (module `driving`). Its checkpoint does not hold its config,
    so the speed cap it was trained with (pipeline.py's `student_speed_cap`, < 0: none) is given here."""
    s = Student(driving=dict(STUDENT_SIZES[size], speed_cap=speed_cap(cap)))
    load_ckpt(path, {"driving": s.driving})
    s.driving.eval()
    return lambda image, speed, tp: s.driving(image, speed, tp)[:2]


@torch.no_grad()
def measure(plan, data: DrivingData, idx: np.ndarray, empty_images: torch.Tensor, bs: int = 50) -> dict:
    reach, reach_blind, d_speed, d_path = [], [], [], []
    for i in range(0, len(idx), bs):
        b = data.batch(idx[i: i + bs])
        path, swp = plan(b["image"], b["speed"], b["target_points"])
        blind = empty_images[torch.arange(len(b["speed"])) % len(empty_images)]
        path_b, swp_b = plan(blind, b["speed"], b["target_points"])
        reach += [swp[:, -1, 0]]
        reach_blind += [swp_b[:, -1, 0]]
        d_speed += [(swp - swp_b).abs().mean((1, 2))]
        d_path += [(path[:, 9] - path_b[:, 9]).norm(dim=1)]
    cat = lambda xs: float(torch.cat(xs).mean())  # noqa: E731
    return {"frames": len(idx), "expert_reach_m": float(data.speed_wps[idx, -1, 0].mean()), "reach_m": cat(reach),
            "reach_empty_road_image_m": cat(reach_blind), "speed_plan_change_m": cat(d_speed),
            "path10_change_m": cat(d_path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset directory (offline frames or a rollout's)")
    ap.add_argument("--teacher", action="append", default=[],
                    help="a teacher: a training checkpoint (RUN/teacher.pt) or an export's (models/student/teacher.pt)")
    ap.add_argument("--student", action="append", default=[], help="a student stage-1 checkpoint (student_s1.pt)")
    ap.add_argument("--student-size", default="p4-147k", choices=sorted(STUDENT_SIZES))
    ap.add_argument("--student-speed-cap", type=float, default=-1.0,
                    help="the students' speed cap in m/s, as in their preset (closedloop: 0, blind); < 0: none")
    ap.add_argument("--frames", type=int, default=200, help="frames per group")
    a = ap.parse_args()
    if not a.teacher and not a.student:
        ap.error("give at least one --teacher or --student")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = DrivingData(a.data)
    empty_idx = pick(data, GROUPS["empty road"], 50)
    if len(empty_idx) == 0:
        sys.exit(f"probe_vision: {a.data} has no empty-road frames (object none, accelerate or keep speed) to swap in")
    empty = data.batch(empty_idx)["image"]
    models = [(p, teacher_planner(p)) for p in a.teacher]
    models += [(p, student_planner(p, a.student_size, a.student_speed_cap)) for p in a.student]
    for name, keep in GROUPS.items():
        idx = pick(data, keep, a.frames)
        if len(idx) == 0:
            print(f"{name}: no frames")
            continue
        for path, plan in models:
            m = measure(plan, data, idx, empty)
            print(f"{name} ({m['frames']} frames) {path}: last speed waypoint expert {m['expert_reach_m']:.2f} m, "
                  f"model {m['reach_m']:.2f}, with an empty road's image {m['reach_empty_road_image_m']:.2f}; "
                  f"change of the speed plan {m['speed_plan_change_m']:.2f} m, of path point 10 "
                  f"{m['path10_change_m']:.2f} m")


if __name__ == "__main__":
    main()
