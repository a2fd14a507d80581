"""Does a student tell a parked car from a queued one? (issue 22)

A parked car shows four amber hazard lamps (src/sim/render.rs); a queued car does not. Every model drives into the
parked car as if it were the head of a queue, so this asks the student's encoder whether it keeps the lamps at all.
Frames: those whose labelled object (what the expert reacts to) is a car or a parked car < MAX_DIST ahead.

  features  a lamp detector trained on the student's frozen tokens (per-token MLP, max over the tokens, class-
            balanced), fitted on three quarters of the dataset's episodes, scored on the rest
  head      the student's own perception head (`student_aux_weight` > 0) on datasets it did not train on (e.g. the
            rounds' rollouts): what it calls the queued and the parked cars

  python probe_parked.py features --data RUN/dataset --student RUN/student_s1.pt
  python probe_parked.py head --student RUN/student_s1.pt DATASET [DATASET ...]
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import OBJECTS, DrivingData  # noqa: E402
from distill import load_ckpt  # noqa: E402
from pipeline import PRESETS, student_config  # noqa: E402
from student import Student  # noqa: E402
from teacher import PerceptionHead  # noqa: E402

MAX_DIST = 30.0
CAR, PARKED = OBJECTS.index("car"), OBJECTS.index("parked_car")


def car_frames(data: DrivingData, max_dist: float = MAX_DIST) -> np.ndarray:
    """Indices of the frames whose labelled object is a car or a parked car closer than `max_dist`."""
    dist = np.nan_to_num(data.object_dist.numpy(), nan=np.inf)
    car = ((data.object == CAR) | (data.object == PARKED)).numpy()
    return np.nonzero(car & (dist < max_dist))[0]


def held_out_episodes(data: DrivingData, idx: np.ndarray, frac: float = 0.25, seed: int = 0) -> np.ndarray:
    """True for the frames of `idx` whose episode (scenario, seed) is in a random `frac` of the episodes."""
    eps = [(data.records[i]["scenario"], data.records[i]["seed"]) for i in idx]
    unique = sorted(set(eps))
    n_held = min(len(unique) - 1, max(1, int(len(unique) * frac)))  # one episode alone is fitted, not held out
    chosen = np.random.default_rng(seed).permutation(len(unique))[:n_held]
    held = {unique[j] for j in chosen}
    return np.array([e in held for e in eps])


def tokens_of(student: Student, data: DrivingData, idx: np.ndarray, bs: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([student.driving.encoder(data.batch(idx[i:i + bs])["image"])[0]
                          for i in range(0, len(idx), bs)])


def lamp_detector(x: torch.Tensor, y: torch.Tensor, steps: int = 600) -> torch.nn.Module:
    """Per-token MLP, max over the tokens, class-balanced logistic loss: fires when any token holds a parked car."""
    det = torch.nn.Sequential(torch.nn.Linear(x.shape[2], 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(det.parameters(), lr=3e-3, weight_decay=1e-4)
    pos_weight = (y < 0.5).sum() / (y > 0.5).sum().clamp(min=1)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(det(x).squeeze(-1).amax(1), y, pos_weight=pos_weight).backward()
        opt.step()
    return det


def recall(pred: torch.Tensor, parked: torch.Tensor) -> tuple[float, float]:
    """(share of the parked cars called parked, share of the queued cars called queued)."""
    return (float((pred & parked).sum() / parked.sum().clamp(min=1)),
            float((~pred & ~parked).sum() / (~parked).sum().clamp(min=1)))


def load_student(ckpt: str, head: bool) -> tuple[Student, PerceptionHead | None]:
    st = Student(driving=student_config(dict(PRESETS["closedloop"])))
    perceive = PerceptionHead(st.driving.cfg["feat_dim"]) if head else None
    load_ckpt(ckpt, {"driving": st.driving, **({"perceive": perceive} if head else {})})
    st.eval()
    return st, perceive


def probe_features(a) -> None:
    data = DrivingData(a.data)
    st, _ = load_student(a.student, head=False)
    idx = car_frames(data)
    held = torch.as_tensor(held_out_episodes(data, idx))
    x = tokens_of(st, data, idx)
    mu, sd = x[~held].mean((0, 1)), x[~held].std((0, 1)) + 1e-5
    x = (x - mu) / sd
    parked = data.object[idx] == PARKED
    det = lamp_detector(x[~held], parked[~held].float())
    with torch.no_grad():
        pred = det(x).squeeze(-1).amax(1) > 0
    print(f"{len(idx)} frames, {int(parked.sum())} parked")
    for name, m in (("fitted episodes", ~held), ("held-out episodes", held)):
        p, q = recall(pred[m], parked[m])
        print(f"  {name}: parked called parked {p:.1%}, queued called queued {q:.1%} ({int(m.sum())} frames)")


def probe_head(a) -> None:
    st, head = load_student(a.student, head=True)
    for root in a.datasets:
        data = DrivingData(root)
        idx = car_frames(data)
        with torch.no_grad():
            pred = torch.cat([head(tokens_of(st, data, idx[i:i + 64]))["object"].argmax(1)
                              for i in range(0, len(idx), 64)]) if len(idx) else torch.zeros(0, dtype=torch.long)
        for label in (CAR, PARKED):
            said = torch.bincount(pred[data.object[idx] == label], minlength=len(OBJECTS))
            if said.sum():
                print(f"{root}: {OBJECTS[label]} ({int(said.sum())} frames) called "
                      + ", ".join(f"{OBJECTS[k]} {int(said[k])}" for k in said.nonzero().flatten().tolist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("features", help="a lamp detector on the frozen tokens, held-out episodes")
    f.add_argument("--data", required=True)
    f.add_argument("--student", required=True, help="a stage-1 or round checkpoint (student_s1.pt)")
    h = sub.add_parser("head", help="the student's own perception head on other datasets")
    h.add_argument("--student", required=True, help="a checkpoint trained with student_aux_weight > 0")
    h.add_argument("datasets", nargs="+")
    a = ap.parse_args()
    probe_features(a) if a.mode == "features" else probe_head(a)


if __name__ == "__main__":
    main()
