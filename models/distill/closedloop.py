"""Closed-loop training (issue 22): DAgger for the teacher, on-policy distillation for the student.

Offline behaviour cloning never sees the states its own small errors lead to. Here the model drives (`rtvla sim
dataset --model M --beta B`: the model's command is applied each tick, the expert's with probability B) and the states
it reaches are labelled:

* **DAgger (teacher)** -- round r rolls out the current teacher (beta-mixed with the expert in early rounds), the
  privileged expert labels every visited state (waypoints, commentary: the dataset's records), the rollouts are
  aggregated with the expert's offline data, and the teacher is fine-tuned on the aggregate. Held-out DS is measured
  after every round (`rtvla sim eval` on seeds disjoint from the final evaluation's); rounds stop when it stops rising,
  and the best round's teacher is kept.
* **On-policy distillation (student)** -- the student drives (beta 0 by default: no privileged expert on a real car),
  the **teacher** labels the frames it saw: its own greedy commentary, then waypoints conditioned on it, its ViT
  tokens and waypoint query states (the targets of the four distillation levels); aggregated over rounds with the
  offline frames (where the teacher reads the ground-truth commentary, as in stage 1), the student is fine-tuned.

Every step of a round is resumable: rollouts are written to `<dir>.tmp` and renamed, teacher labels saved atomically,
training checkpoints as in distill.py, per-round results in `<run>/closedloop.json`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import LABEL_FIELDS, PAD, DrivingData, template_key
from distill import (DistillHeads, cache_teacher_targets, ckpt_has, eval_driving, eval_teacher, load_ckpt,
                     pool_tokens, student_aux, train_student_driving, train_teacher)
from export import TeacherVisionOnly, export_driving
from teacher import PerceptionHead

STATE = "closedloop.json"
# `cargo xtask eval`'s held-out seeds per scenario: the model card's 48 runs (the rounds measure on others)
CARD_SEEDS = "1000000..1000004"


# ------------------------------------------------------------------------------------------------------------ data
class ConcatData(DrivingData):
    """Several dataset directories as one (DAgger's aggregate), with DrivingData's interface. `part[i]` says which
    directory frame i came from (0 = the first, the expert's offline data)."""

    def __init__(self, parts: list[DrivingData]) -> None:  # noqa: D107 -- no DrivingData.__init__: nothing to read
        self.root = parts[0].root
        self.roots = [p.root for p in parts]
        self.records = [r for p in parts for r in p.records]
        self.shards = [s for p in parts for s in p.shards]
        offsets = np.cumsum([0] + [len(p.shards) for p in parts])[:-1]
        self.shard_idx = np.concatenate([p.shard_idx + o for p, o in zip(parts, offsets)])
        self.frame_idx = np.concatenate([p.frame_idx for p in parts])
        for k in LABEL_FIELDS:
            setattr(self, k, torch.cat([getattr(p, k) for p in parts]))
        self.seeds = sorted({x["seed"] for x in self.records})
        self.part = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
        self.template_labels = dict(parts[0].template_labels)
        for p in parts[1:]:
            for k, v in p.template_labels.items():
                self.template_labels.setdefault(k, v)


def aggregate_indices(base_tr: np.ndarray, data: ConcatData, onpolicy_frac: float) -> np.ndarray:
    """Training indices of the aggregate: the offline training frames + every on-policy frame, the on-policy ones
    repeated so that they make about `onpolicy_frac` of the samples (a few hundred fine-tuning steps would otherwise
    see them rarely: they are a small part of the aggregate)."""
    on = np.nonzero(data.part > 0)[0]
    if len(on) == 0 or onpolicy_frac <= 0:
        return base_tr
    want = onpolicy_frac / max(1e-6, 1 - onpolicy_frac) * len(base_tr)
    rep = max(1, int(round(want / len(on))))
    return np.concatenate([base_tr, np.tile(on, rep)])


# ------------------------------------------------------------------------------------------------------------ rust side
def rollout_done(out: str) -> bool:
    """Has a rollout into `out` finished? It is written to `out`.tmp and renamed when complete."""
    return os.path.exists(os.path.join(out, "data_card.json"))


def rollout(rtvla: str, manifest: str, out: str, frames: int, seeds: str, every: int, beta: float,
            scenarios: str = "all") -> dict:
    """The model of `manifest` drives (beta-mixed with the expert) `scenarios` in turn; frames + the expert's labels
    land in `out`."""
    if rollout_done(out):
        print(f"[rollout] {out} exists, reusing")
    else:
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [rtvla, "sim", "dataset", "--out", tmp, "--frames", str(frames), "--seeds", seeds,
               "--scenarios", scenarios,
               "--every", str(every), "--noise", "0", "--model", manifest, "--beta", str(beta)]
        print("[rollout]", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        os.replace(tmp, out)
    with open(os.path.join(out, "data_card.json")) as f:
        return json.load(f)


class Eval:
    """Closed-loop held-out driving score through the runtime (`rtvla sim eval --policy model`; or a built-in policy,
    e.g. `blind`, with `manifest` None), run in the background: a round's rollout of the same policy runs meanwhile
    (one thread). The evaluation runs as many episodes at a time as there are CPUs (`sim eval --jobs`; one at a time
    until 2026-12-03, when it was most of a DAgger round's wall time and left a core idle after the rollout).
    `result()` waits for it."""

    def __init__(self, rtvla: str, manifest: str | None, out_json: str, scenarios: str, seeds: str,
                 policy: str = "model") -> None:
        self.out_json, self.t0, self.proc = out_json, time.time(), None
        if not os.path.exists(out_json):
            cmd = [rtvla, "sim", "eval", "--policy", policy] + (["--model", manifest] if manifest else []) + [
                "--scenarios", scenarios, "--seeds", seeds, "--json", out_json + ".tmp"]
            print("[eval]", " ".join(cmd), flush=True)
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self) -> dict:
        if self.proc is not None:
            rc = self.proc.wait()
            if rc != 0:
                raise subprocess.CalledProcessError(rc, f"rtvla sim eval -> {self.out_json}")
            os.replace(self.out_json + ".tmp", self.out_json)
            self.proc = None
        with open(self.out_json) as f:
            r = json.load(f)
        return {"driving_score": r["driving_score"], "route_completion": r["route_completion"], "runs": len(r["runs"]),
                "eval_wall_s": round(time.time() - self.t0, 1)}


def weakest_scenarios(eval_json: str, k: int) -> list[str]:
    """The `k` scenarios with the lowest DS in a round evaluation's per-scenario table (ties by name). A rollout that
    drives every scenario in turn meets each about once a round (2 000 frames are ~12 episodes), so the two
    parked-car scenarios, which cost every model ~6 DS, gave the rounds ~13 frames each of a car 0-20 m ahead;
    a focus rollout drives the policy where it fails (README, "Focus rollouts")."""
    with open(eval_json) as f:
        per = json.load(f)["per_scenario"]
    return sorted(per, key=lambda s: (per[s]["driving_score"], s))[:k]


def eval_ds(rtvla: str, manifest: str | None, out_json: str, scenarios: str, seeds: str, policy: str = "model") -> dict:
    """`Eval(...).result()`: the held-out DS, waiting for it."""
    return Eval(rtvla, manifest, out_json, scenarios, seeds, policy).result()


def export_policy(model, out_dir: str, name: str, kind: str, desc: str) -> str:
    """A round's driving graph (ONNX + sealed manifest) for the rollout and the round's evaluation."""
    manifest = os.path.join(out_dir, f"{name}.toml")
    if not os.path.exists(manifest):
        tmp = out_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        export_driving(model, tmp, name, {"preset": "closed-loop round", "trained": True}, kind=kind, description=desc)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    return manifest


# ----------------------------------------------------------------------------------------------------- teacher labels
@torch.no_grad()
def teacher_labels(teacher, data: DrivingData, bs: int = 32) -> dict:
    """What the teacher says about frames it was not given any label for (the real-world labeller): its greedy
    commentary (tokens in the dataset's [BOS .. EOS PAD..] layout), then -- teacher-forced on that commentary, i.e.
    language in the loop -- its waypoints, pooled ViT tokens and query states (distill.teacher_targets' form)."""
    teacher.eval()
    out: dict = {}
    for i in tqdm(range(0, len(data), bs), desc="teacher labels", dynamic_ncols=True, mininterval=2.0):
        b = data.batch(np.arange(i, min(len(data), i + bs)))
        text, _, _ = teacher.generate(b["image"], b["speed"], b["target_points"])
        t = teacher(b["image"], b["speed"], b["target_points"], text)
        tokens = torch.cat([text, torch.full((text.shape[0], 1), PAD, dtype=torch.long)], 1)
        parts = {"tokens": tokens, "path": t["path"], "speed_wps": t["speed_wps"],
                 "feat": pool_tokens(t["features"], teacher.grid).half(),
                 "query": F.layer_norm(t["queries"], (teacher.dim,)).half()}
        for k, v in parts.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def cached(path: str, make):
    """torch.load(path), or make() saved there atomically."""
    if os.path.exists(path):
        return torch.load(path, map_location="cpu", weights_only=False)
    v = make()
    torch.save(v, path + ".tmp")
    os.replace(path + ".tmp", path)
    return v


# ------------------------------------------------------------------------------------------------------------- state
def load_state(run_dir: str) -> dict:
    p = os.path.join(run_dir, STATE)
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f)
    return {}


def save_state(run_dir: str, state: dict) -> None:
    p = os.path.join(run_dir, STATE)
    with open(p + ".tmp", "w") as f:
        json.dump(state, f, indent=2)
    os.replace(p + ".tmp", p)


def rising(ds: list[float], patience: int, min_gain: float) -> bool:
    """Has the held-out DS risen by > min_gain over the best before within the last `patience` rounds?"""
    if len(ds) <= patience:
        return True
    best_before = max(ds[: len(ds) - patience])
    return max(ds[len(ds) - patience:]) > best_before + min_gain


def beta_at(r: int, beta0: float, decay: float) -> float:
    """beta of round r (1-based): beta0, then geometric decay; below 0.05 it is 0 (the model alone)."""
    b = beta0 * decay ** (r - 1)
    return 0.0 if b < 0.05 else round(b, 3)


# ----------------------------------------------------------------------------------------------------------- DAgger
def _focus_rollout(rtvla: str, manifest: str, out: str, eval_json: str, cfg: dict, frames: int, seeds: str,
                   beta: float) -> dict:
    """A round's focus rollout: the policy drives `frames` in its `focus_scenarios` weakest scenarios of `eval_json`.
    Returns what the round records of it (its seconds None when an earlier session drove it)."""
    t0 = time.time()
    weak = weakest_scenarios(eval_json, cfg["focus_scenarios"])
    reused = rollout_done(out)
    card = rollout(rtvla, manifest, out, frames, seeds, cfg["rollout_every"], beta, ",".join(weak))
    return dict(focus_scenarios=weak, focus_frames=card["frames"],
                focus_s=None if reused else round(time.time() - t0, 1))


def _rounds(kind: str, run_dir: str, rtvla: str, cfg: dict, n_rounds: int, beta0: float, seed0: int, frames: int,
            export, val_err, learn, focus_frames: int = 0) -> list[dict]:
    """The round loop shared by DAgger and on-policy distillation. Round 0 is the offline model. Round r: the policy of
    round r-1 drives (rollout, beta-mixed, every scenario in turn) while its held-out DS is measured in the background;
    if the DS is still rising and `focus_frames` > 0, it drives `focus_frames` more in its `focus_scenarios` weakest
    scenarios of that measurement (a focus rollout, seeds of its own); then `learn(r, rollout_dirs)` trains on the
    aggregate and round r's policy is exported and evaluated. Per-round results go to `<run>/closedloop.json` under
    `kind`; each step is skipped when its output exists (resumable)."""
    root = os.path.join(run_dir, "dagger" if kind == "teacher" else "onpolicy")
    os.makedirs(root, exist_ok=True)
    prev = load_state(run_dir).get(kind, [])
    rounds: list[dict] = []

    def start(r: int) -> tuple[str, Eval]:
        pol = export(os.path.join(root, f"r{r}", "policy"), r)
        return pol, Eval(rtvla, pol, os.path.join(root, f"r{r}", "eval.json"), cfg["round_eval_scenarios"],
                         cfg["round_eval_seeds"])

    def finish(r: int, pol: str, ev: Eval, extra: dict) -> None:
        res = ev.result()
        row = dict(extra, round=r, policy=pol, val_wp_l2_m=val_err(), **res)
        row["eval_s"] = row.pop("eval_wall_s")
        if r < len(prev):  # a resumed run keeps the first measurement of each step's time
            row.update({k: prev[r][k] for k in ("rollout_s", "focus_s", "learn_s", "train_s", "eval_s")
                        if k in prev[r]})
        if r > 0:  # what the round cost: rollouts, learning (teacher labels + training) and evaluation (the evaluation
            # overlaps the next rollout); a rollout reused from an earlier session (its seconds None) is not counted
            spent = ((row["rollout_s"] or 0.0) + (row.get("focus_s") or 0.0) + row.get("learn_s", row["train_s"])
                     + row["eval_s"])
            row["minutes"] = round(spent / 60, 2)
        rounds.append(row)
        state = load_state(run_dir)
        state[kind] = rounds
        save_state(run_dir, state)
        print(f"[{kind} rounds] round {r}: held-out DS {res['driving_score']:.1f} over {res['runs']} runs", flush=True)

    pol, ev = start(0)
    extra: dict = {}
    for r in range(1, n_rounds + 1):
        t0 = time.time()
        beta = beta_at(r, beta0, cfg["beta_decay"])
        seeds = f"{seed0 + 1000 * r}..{seed0 + 1000 * (r + 1)}"
        d = os.path.join(root, f"r{r}")
        reused = rollout_done(os.path.join(d, "data"))
        card = rollout(rtvla, pol, os.path.join(d, "data"), frames, seeds, cfg["rollout_every"], beta)
        rollout_s = None if reused else round(time.time() - t0, 1)  # None: driven in an earlier session, not timed
        finish(r - 1, pol, ev, extra)
        if not rising([x["driving_score"] for x in rounds], cfg["patience"], cfg["min_gain"]):
            print(f"[{kind} rounds] held-out DS stopped rising after round {r - 1}: stopping (round {r}'s rollout unused)")
            ev = None
            break
        dirs, focus = [os.path.join(d, "data")], {}
        if focus_frames > 0:
            # the second half of the round's seed block (the drive above starts at its first seed, one seed per
            # 12 episodes)
            focus = _focus_rollout(rtvla, pol, os.path.join(d, "focus"), os.path.join(root, f"r{r - 1}", "eval.json"),
                                   cfg, focus_frames, f"{seed0 + 1000 * r + 500}..{seed0 + 1000 * (r + 1)}", beta)
            dirs.append(os.path.join(d, "focus"))
        t1 = time.time()
        info = learn(r, dirs)
        extra = dict(info, **focus, learn_s=round(time.time() - t1, 1), beta=beta, rollout_seeds=seeds,
                     rollout_frames=card["frames"], rollout_ticks=card.get("ticks"),
                     rollout_model_ticks=card.get("model_ticks"), rollout_ds=card.get("expert_mean_driving_score"),
                     rollout_s=rollout_s)
        pol, ev = start(r)
    if ev is not None:
        finish(len(rounds), pol, ev, extra)
    best = kept_round(rounds)
    state = load_state(run_dir)
    state[f"{kind}_best_round"] = best
    save_state(run_dir, state)
    print(f"[{kind} rounds] keeping round {best} (held-out DS {rounds[best]['driving_score']:.1f})")
    return rounds


def kept_round(rounds: list[dict]) -> int:
    """The round a closed-loop stage keeps: the best held-out DS (round 0 = trained offline; 0 when none ran)."""
    return int(np.argmax([x["driving_score"] for x in rounds])) if rounds else 0


def dagger_teacher(teacher, base: DrivingData, base_tr, va, run_dir: str, rtvla: str, cfg: dict) -> list[dict]:
    """DAgger rounds for the teacher (module docstring). `teacher` holds the round-0 (offline) teacher on entry and the
    best round's on return. Returns one dict per evaluated round (DS, beta, frames, minutes)."""
    parts = [base]
    ckpts = [os.path.join(run_dir, "teacher.pt")]

    def export(out_dir: str, r: int) -> str:
        return export_policy(TeacherVisionOnly(teacher), out_dir, "teacher", "teacher",
                             f"DAgger round {r} teacher, vision-only (closed-loop training policy)")

    def learn(r: int, dirs: list[str]) -> dict:
        d = os.path.dirname(dirs[0])
        parts.extend(DrivingData(x) for x in dirs)
        agg = ConcatData(parts)
        tr = aggregate_indices(base_tr, agg, cfg["onpolicy_frac"])
        timing = train_teacher(teacher, agg, tr, va, d, dict(
            steps=cfg["dagger_steps"], batch=cfg["batch"], lr=cfg["dagger_lr"], eval_every=cfg["eval_every"],
            ckpt_every=cfg["ckpt_every"], start_boost=cfg["start_boost"], seed=100 + r, wp_loss=cfg["wp_loss"],
            tp_noise=cfg["teacher_tp_noise"], w_aux=cfg["teacher_aux_weight"]))
        ckpts.append(os.path.join(d, "teacher.pt"))
        teacher.eval()
        return {"aggregate_frames": len(agg), "train_s": round(timing["elapsed_s"], 1)}

    rounds = _rounds("teacher", run_dir, rtvla, cfg, cfg["dagger_rounds"], cfg["dagger_beta0"], cfg["rollout_seed0"],
                     cfg["dagger_frames"], export, lambda: eval_teacher(teacher, base, va), learn,
                     cfg["dagger_focus_frames"])
    best = kept_round(rounds)
    if best != len(rounds) - 1:
        load_ckpt(ckpts[best], {"teacher": teacher})
    teacher.eval()
    return rounds


# --------------------------------------------------------------------------------------------- on-policy distillation
def with_teacher_labels(data: DrivingData, labels: dict) -> DrivingData:
    """`data` whose targets are the teacher's (waypoints, commentary tokens) instead of the expert's: on a real car
    nothing else labels the student's drives. The expert's action/object labels stay (scoring only)."""
    data.path, data.speed_wps, data.tokens = labels["path"].float(), labels["speed_wps"].float(), labels["tokens"]
    return data


def onpolicy_student(student, teacher, base: DrivingData, base_tr, va, run_dir: str, rtvla: str, cfg: dict,
                     base_targets: dict, heads: DistillHeads) -> tuple[list[dict], ConcatData, np.ndarray]:
    """On-policy distillation rounds (module docstring). `student.driving` holds stage 1 (offline) on entry and the
    best round's on return. Returns (rounds, the aggregate with the teacher's labels up to the kept round, its
    training indices)."""
    parts, targets = [base], [base_targets]
    ckpts = [os.path.join(run_dir, "student_s1.pt")]
    perceive = perception_head_of(student, ckpts[0], cfg.get("student_aux_weight", 0.0))
    n_parts = [1]  # len(parts) after each round: a round adds one part per rollout (its drive, and a focus drive)

    def export(out_dir: str, r: int) -> str:
        return export_policy(student.driving, out_dir, "student", "student",
                             f"On-policy distillation round {r} student (closed-loop training policy)")

    def learn(r: int, dirs: list[str]) -> dict:
        d = os.path.dirname(dirs[0])
        agree = []
        for x in dirs:  # <round>/data's labels keep their old name, teacher_labels.pt (resumable runs)
            part = DrivingData(x)
            name = "teacher_labels.pt" if os.path.basename(x) == "data" else f"teacher_labels_{os.path.basename(x)}.pt"
            lab = cached(os.path.join(d, name), lambda p=part: teacher_labels(teacher, p))
            agree += [template_key(rec["commentary"]) == template_key(s)
                      for rec, s in zip(part.records, _decode_all(lab["tokens"]))]
            parts.append(with_teacher_labels(part, lab))
            targets.append({k: lab[k] for k in ("path", "speed_wps", "feat", "query")})
        agree = float(np.mean(agree))
        agg = ConcatData(parts)
        tr = aggregate_indices(base_tr, agg, cfg["student_onpolicy_frac"])
        cache = {k: torch.cat([t[k] for t in targets]) for k in ("path", "speed_wps", "feat", "query")}
        if any("has" in t for t in targets):
            cache["has"] = torch.cat([t.get("has", torch.ones(len(t["path"]))) for t in targets])
        timing = train_student_driving(student, teacher, agg, tr, va, d, dict(
            steps=cfg["onpolicy_steps"], batch=cfg["batch"], lr=cfg["onpolicy_lr"], eval_every=cfg["eval_every"],
            ckpt_every=cfg["ckpt_every"], seed=200 + r, wp_loss=cfg["wp_loss"], **student_aux(cfg)),
            name="student_s1", cached=cache, heads=heads,
            perceive=perceive)  # no start-from-rest boost here: a drive stuck at rest records hundreds of such frames
            # already, and tripling them cost 5.6 DS in a one-round A/B (README, closed-loop training, second run)
        ckpts.append(os.path.join(d, "student_s1.pt"))
        n_parts.append(len(parts))
        return {"teacher_commentary_matches_expert_template": round(agree, 3), "aggregate_frames": len(agg),
                "train_s": round(timing["elapsed_s"], 1)}

    rounds = _rounds("student", run_dir, rtvla, cfg, cfg["onpolicy_rounds"], cfg["student_beta0"],
                     cfg["rollout_seed0"] + 50_000, cfg["onpolicy_frames"], export,
                     lambda: eval_driving(student.driving, base, va), learn, cfg["onpolicy_focus_frames"])
    best = kept_round(rounds)
    if best != len(rounds) - 1:
        load_ckpt(ckpts[best], {"driving": student.driving, "heads": heads})
    agg = ConcatData(parts[: n_parts[best]])  # stage 2 reads the drives up to the kept round
    return rounds, agg, aggregate_indices(base_tr, agg, cfg["student_onpolicy_frac"])


def perception_head_of(student, ckpt: str, weight: float) -> PerceptionHead | None:
    """The student's perception head for the rounds (`student_aux_weight` > 0), as stage 1 left it in `ckpt` (a new
    one when stage 1 trained none); None when the rounds train none."""
    if weight <= 0:
        return None
    head = PerceptionHead(student.driving.cfg["feat_dim"])
    if ckpt_has(ckpt, "perceive"):
        load_ckpt(ckpt, {"perceive": head})
    return head


def _decode_all(tokens) -> list[str]:
    from data import VOCAB
    return [VOCAB.decode(t) for t in tokens]


# ------------------------------------------------------------------------------------------------------------- plot
def plot_rounds(run_dir: str, series: dict[str, list[dict]], refs: dict[str, float] | None = None) -> str:
    """ds_rounds.svg: held-out DS per round, one line per series (teacher DAgger, student on-policy), written as plain
    SVG like losses.svg; `refs` (e.g. the blind expert) as dashed horizontal lines."""
    colours = ["#1f6fd1", "#d13a1f", "#2a9d4a", "#8e44ad"]
    w, h, pad = 420, 240, 40
    n = max([len(v) for v in series.values()] + [2])
    fx = lambda j: pad + j / max(1, n - 1) * (w - pad - 10)  # noqa: E731
    fy = lambda y: 20 + (100 - min(100.0, max(0.0, y))) / 100 * (h - 60)  # noqa: E731
    parts = [f'<rect x="{pad}" y="20" width="{w - pad - 10}" height="{h - 60}" fill="#fafafa" stroke="#ddd"/>',
             '<text x="4" y="14" font-weight="bold">held-out DS per closed-loop round</text>']
    for y in (0, 25, 50, 75, 100):
        parts.append(f'<text x="8" y="{fy(y) + 3:.1f}">{y}</text>'
                     f'<line x1="{pad}" x2="{w - 10}" y1="{fy(y):.1f}" y2="{fy(y):.1f}" stroke="#eee"/>')
    for j in range(n):
        parts.append(f'<text x="{fx(j) - 3:.1f}" y="{h - 28}">{j}</text>')
    parts.append(f'<text x="{pad}" y="{h - 14}">round (0 = offline training)</text>')
    for i, (c, k) in enumerate(zip(colours, series)):  # legend: one line per series, inside the plot's top left
        parts.append(f'<text x="{pad + 6}" y="{32 + 12 * i}" fill="{c}">{k}</text>')
    for c, (k, rows) in zip(colours, series.items()):
        pts = [(fx(j), fy(r["driving_score"])) for j, r in enumerate(rows)]
        if pts:
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>' for x, y in pts]
    for k, v in (refs or {}).items():
        parts.append(f'<line x1="{pad}" x2="{w - 10}" y1="{fy(v):.1f}" y2="{fy(v):.1f}" stroke="#888" '
                     f'stroke-dasharray="4 3"/><text x="{w - 120}" y="{fy(v) - 3:.1f}" fill="#888">{k} {v:.1f}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="10">{"".join(parts)}</svg>\n')
    out = os.path.join(run_dir, "ds_rounds.svg")
    with open(out, "w") as f:
        f.write(svg)
    print(f"[plot] {out}")
    return out


def no_teacher_targets(n: int, teacher_dim: int, grid: tuple[int, int] = (4, 8), n_q: int = 30) -> dict:
    """Placeholder targets for `n` offline frames the teacher did not label (`has` = 0): with
    `onpolicy_base_targets = "none"` the offline frames keep the expert's ground truth only and the teacher's
    terms come from the student's own drives (cheap: no teacher pass over the offline data)."""
    return {"path": torch.zeros(n, 20, 2), "speed_wps": torch.zeros(n, 10, 2),
            "feat": torch.zeros(n, teacher_dim, *grid, dtype=torch.half),
            "query": torch.zeros(n, n_q, teacher_dim, dtype=torch.half), "has": torch.zeros(n)}


def ablation_steps(cfg: dict) -> int:
    """The ablation's stage-1 steps: the distilled student's offline steps + every planned on-policy round's (same
    compute for both arms)."""
    return cfg["s1_steps"] + cfg.get("onpolicy_rounds", 0) * cfg.get("onpolicy_steps", 0)

