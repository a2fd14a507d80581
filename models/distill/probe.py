"""Commentary probe: how well can the commentary's (action, object) labels be read from a given set of inputs?

Trains a plain classifier straight on the labels (no sentences, no decoder) and scores it on validation frames
(unseen training episodes) and on a held-out dataset (`cargo xtask eval`'s target/eval/heldout-dataset-600). It
answers "is the language branch short of training or short of information?": a branch that scores about what a
classifier on its own inputs scores has learnt what those inputs carry.

  --inputs plan      the plan vector the resampler's ego tokens read (speed, speed 0.5 s before, target points and
                     the driving branch's path + speed waypoints: layers.ego_features), MLP
  --inputs features  + the snapshot features the language branch reads ([32, 64]), attention pooling
  --inputs tokens    + the driving branch's full-resolution tokens ([128, 64]) instead
  --inputs image     + a 5-layer CNN on the camera image itself (what a larger visual encoder could give)
  --plan expert      the expert's own path + speed waypoints in the plan vector instead of the driving branch's
                     (what the commentary could reach if the student drove exactly like the expert)

  python probe.py --driving-ckpt RUN/student_s1.pt --data DATASET --heldout HELDOUT --inputs plan
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import ACTIONS, OBJECTS, DrivingData  # noqa: E402
from distill import load_ckpt  # noqa: E402
from layers import EGO_DIM, Attention, ego_features  # noqa: E402
from student import Student, StudentEncoder  # noqa: E402

N_A = len(ACTIONS)


@torch.no_grad()
def driving_inputs(drv, data: DrivingData, bs: int = 128, plan: str = "student") -> dict:
    """The driving branch's outputs on every frame: plan vector, snapshot features, full-resolution tokens.

    plan="expert" puts the expert's own path and speed waypoints (the dataset's labels) into the plan vector instead
    of the driving branch's: what the commentary could reach if the student drove exactly like the expert."""
    ego, feats, tokens = [], [], []
    for i in range(0, len(data), bs):
        b = data.batch(np.arange(i, min(len(data), i + bs)))
        path, sw, full, _ = drv(b["image"], b["speed"], b["target_points"], return_queries=True)
        if plan == "expert":
            path, sw = b["path"], b["speed_wps"]
        ego.append(ego_features(b["speed"], b["speed_prev"], b["target_points"], path, sw))
        feats.append(StudentEncoder.pool(full).half())
        tokens.append(full.half())
    return {"plan": torch.cat(ego), "features": torch.cat(feats), "tokens": torch.cat(tokens)}


def conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Probe(nn.Module):
    """plan MLP (+ 8 learned queries attending to the visual tokens, or a CNN on the image) -> action, object."""

    def __init__(self, inputs: str, feat_dim: int = 64, dim: int = 128) -> None:
        super().__init__()
        self.inputs = inputs
        self.plan = nn.Sequential(nn.Linear(EGO_DIM, dim), nn.GELU(), nn.Linear(dim, dim))
        vis = 0
        if inputs in ("features", "tokens"):
            self.q = nn.Parameter(torch.randn(1, 8, dim) * 0.02)
            self.fnorm = nn.LayerNorm(feat_dim)
            self.att = Attention(dim, 4, kv_dim=feat_dim)
            vis = 8 * dim
        elif inputs == "image":
            self.cnn = nn.Sequential(conv(3, 32), conv(32, 48), conv(48, 64), conv(64, 96), conv(96, 128),
                                     nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten())
            vis = 8 * 128
        self.head = nn.Sequential(nn.LayerNorm(vis + dim), nn.Linear(vis + dim, 256), nn.GELU(),
                                  nn.Linear(256, N_A + len(OBJECTS)))

    def forward(self, plan, visual=None):
        e = self.plan(plan)
        parts = [e]
        if self.inputs in ("features", "tokens"):
            q = self.q.expand(plan.shape[0], -1, -1) + e[:, None]
            parts.insert(0, self.att(q, kv=self.fnorm(visual.float())).flatten(1))
        elif self.inputs == "image":
            parts.insert(0, self.cnn(visual))
        return self.head(torch.cat(parts, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driving-ckpt", required=True, help="student_s1.pt: the driving branch whose outputs are read")
    ap.add_argument("--data", required=True, help="training dataset (rtvla sim dataset)")
    ap.add_argument("--heldout", help="held-out dataset scored at the end (e.g. target/eval/heldout-dataset-600)")
    ap.add_argument("--inputs", choices=["plan", "features", "tokens", "image"], default="plan")
    ap.add_argument("--plan", choices=["student", "expert"], default="student",
                    help="whose path + speed waypoints go into the plan vector: the driving branch's (what a snapshot "
                         "holds) or the expert's own (the ceiling if the student drove like the expert)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    st = Student()
    load_ckpt(a.driving_ckpt, {"driving": st.driving})
    drv = st.driving.eval()
    data = DrivingData(a.data, in_memory=a.inputs == "image")
    tr, va = data.split()
    sets = {"train": (data, driving_inputs(drv, data, plan=a.plan))}
    if a.heldout:
        held = DrivingData(a.heldout)
        sets["held-out"] = (held, driving_inputs(drv, held, plan=a.plan))
    probe = Probe(a.inputs, feat_dim=drv.cfg["feat_dim"])
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=0.01)

    def run(d: DrivingData, x: dict, idx):
        if a.inputs == "image":
            vis = d.batch(idx)["image"]
        elif a.inputs in ("features", "tokens"):
            vis = x[a.inputs][idx]
        else:
            vis = None
        return probe(x["plan"][idx], vis)

    @torch.no_grad()
    def score(d: DrivingData, x: dict, idx) -> str:
        probe.eval()
        act, obj = [], []
        for k in range(0, len(idx), 200):
            j = idx[k : k + 200]
            o = run(d, x, j)
            act.append(o[:, :N_A].argmax(1) == d.action[j])
            obj.append(o[:, N_A:].argmax(1) == d.object[j])
        probe.train()
        act_ok, obj_ok = torch.cat(act), torch.cat(obj)
        both = (act_ok & obj_ok).float().mean()
        return f"action+object {both:.1%} (action {act_ok.float().mean():.1%}, object {obj_ok.float().mean():.1%})"

    t0 = time.time()
    x_tr = sets["train"][1]
    for step in range(a.steps):
        lr = 1e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = tr[rng.integers(len(tr), size=a.batch)]
        o = run(data, x_tr, idx)
        loss = F.cross_entropy(o[:, :N_A], data.action[idx]) + F.cross_entropy(o[:, N_A:], data.object[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(1, a.steps // 3) == 0 or step + 1 == a.steps:
            print(f"[probe {a.inputs}] step {step + 1}/{a.steps} ({time.time() - t0:.0f} s) loss {loss.item():.3f}", flush=True)
    print(f"[probe {a.inputs}] validation ({len(va)} frames): {score(data, x_tr, va)}")
    if a.heldout:
        hd, hx = sets["held-out"]
        print(f"[probe {a.inputs}] held-out ({len(hd)} frames): {score(hd, hx, np.arange(len(hd)))}")


if __name__ == "__main__":
    main()
