"""Closed-loop training (closedloop.py): aggregation, the teacher as labeller, round control, the rollout through the
runtime's dataset mode, the DS-per-round plot."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import closedloop as cl
from data import BOS, EOS, PAD, DrivingData
from teacher import Teacher

SMALL_TEACHER = dict(dim=64, depth=2, heads=2, dec_depth=1)
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixture", "student_fixture.toml")


def _copy_with_offset(src: str, dst: str, seed_offset: int, speed: float) -> None:
    """A second dataset directory: the same frames under other seeds, every speed set to `speed` (to tell them apart)."""
    shutil.copytree(src, dst)
    with open(os.path.join(src, "index.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(dst, "index.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(dict(r, seed=r["seed"] + seed_offset, speed=speed)) + "\n")


def test_concat_data_is_the_parts_in_order(tiny_dataset, tmp_path):
    other = str(tmp_path / "other")
    _copy_with_offset(tiny_dataset, other, 5000, 42.0)
    a, b = DrivingData(tiny_dataset), DrivingData(other)
    agg = cl.ConcatData([a, b])
    assert len(agg) == len(a) + len(b) and list(np.bincount(agg.part)) == [len(a), len(b)]
    i = np.array([1, len(a) + 2])
    got, want_a, want_b = agg.batch(i), a.batch([1]), b.batch([2])
    for k in ("image", "speed", "path", "tokens", "speed_prev"):
        torch.testing.assert_close(got[k][0], want_a[k][0])
        torch.testing.assert_close(got[k][1], want_b[k][0])
    assert float(got["speed"][1]) == 42.0
    tr, va = agg.split()
    assert len(tr) + len(va) == len(agg)


def test_aggregate_indices_weights_the_onpolicy_frames(tiny_dataset, tmp_path):
    other = str(tmp_path / "other")
    _copy_with_offset(tiny_dataset, other, 5000, 1.0)
    agg = cl.ConcatData([DrivingData(tiny_dataset), DrivingData(other)])
    base_tr = np.nonzero(agg.part == 0)[0][:40]
    idx = cl.aggregate_indices(base_tr, agg, 0.5)
    frac = float(np.mean(agg.part[idx] > 0))
    assert 0.35 < frac < 0.65, frac
    assert set(np.nonzero(agg.part > 0)[0]) <= set(idx)  # every on-policy frame is used
    assert (cl.aggregate_indices(base_tr, agg, 0.0) == base_tr).all()


def test_rounds_stop_when_ds_stops_rising_and_beta_decays():
    assert cl.rising([50.0], 1, 0.0)
    assert cl.rising([50.0, 55.0], 1, 0.0)
    assert not cl.rising([50.0, 55.0, 54.0], 1, 0.0)
    assert cl.rising([50.0, 55.0, 54.0], 2, 0.0)  # patience 2: one more round
    assert not cl.rising([50.0, 50.5], 1, 1.0)  # below the minimum gain
    assert [cl.beta_at(r, 0.5, 0.5) for r in (1, 2, 3, 4, 5)] == [0.5, 0.25, 0.125, 0.062, 0.0]


def test_teacher_labels_are_its_own_commentary_and_plan(tiny_dataset):
    """The teacher labels frames without any ground truth: its greedy commentary in the dataset's token layout, and
    waypoints / features / queries teacher-forced on that commentary (what its language-in-the-loop drive plans)."""
    torch.manual_seed(0)
    data = DrivingData(tiny_dataset)
    t = Teacher(**SMALL_TEACHER, lm_aligned=True).eval()
    lab = cl.teacher_labels(t, data, bs=16)
    n = len(data)
    assert lab["tokens"].shape == data.tokens.shape and (lab["tokens"][:, 0] == BOS).all()
    assert lab["path"].shape == (n, 20, 2) and lab["speed_wps"].shape == (n, 10, 2)
    idx = np.array([0, 5, n - 1])
    b = data.batch(idx)
    text, path, sw = t.generate(b["image"], b["speed"], b["target_points"])
    assert (lab["tokens"][idx, : text.shape[1]] == text).all() and (lab["tokens"][idx, -1] == PAD).all()
    torch.testing.assert_close(lab["path"][idx], path, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lab["speed_wps"][idx], sw, atol=1e-4, rtol=1e-4)
    # nothing after the first <eos> but padding
    for row in lab["tokens"]:
        e = (row == EOS).nonzero()
        if len(e):
            assert (row[int(e[0]) + 1:] == PAD).all()
    # the labels replace the expert's targets of that part (on a car nothing else labels the student's drives)
    labelled = cl.with_teacher_labels(DrivingData(tiny_dataset), lab)
    torch.testing.assert_close(labelled.batch(idx)["path"], lab["path"][idx])
    assert (labelled.batch(idx)["tokens"] == lab["tokens"][idx]).all()


def _rtvla_with_model_mode():
    rtvla = os.environ.get("RTVLA_BIN")
    if not rtvla or not os.path.exists(rtvla):
        pytest.skip("RTVLA_BIN not set (cargo xtask train --smoke sets it to the fresh release build)")
    return rtvla


def test_rollout_drives_the_model_and_keeps_the_experts_labels(tmp_path):
    rtvla = _rtvla_with_model_mode()
    out = str(tmp_path / "r1")
    card = cl.rollout(rtvla, FIXTURE, out, frames=10, seeds="7..8", every=4, beta=0.0)
    assert card["driver"] == "model" and card["model_ticks"] == card["ticks"] > 0 and card["frames"] == 10
    d = DrivingData(out)
    assert len(d) == 10 and all(r["driver"] == "model" for r in d.records)
    assert all(len(r["model_path"]) == 20 and r["commentary"] for r in d.records)
    # a second call reuses the finished rollout (resumable), a half-written one is never picked up
    mtime = os.path.getmtime(os.path.join(out, "index.jsonl"))
    cl.rollout(rtvla, FIXTURE, out, frames=10, seeds="7..8", every=4, beta=0.0)
    assert os.path.getmtime(os.path.join(out, "index.jsonl")) == mtime
    # bad beta is refused by the CLI (exit 2), not silently clamped
    r = subprocess.run([rtvla, "sim", "dataset", "--out", str(tmp_path / "x"), "--frames", "2", "--model", FIXTURE,
                        "--beta", "1.5"], capture_output=True)
    assert r.returncode == 2


def test_weakest_scenarios_are_the_lowest_round_scores_ties_by_name(tmp_path):
    per = {"lane_keep": 100.0, "parked_obstacle": 59.3, "obstacle_two_ways": 65.0, "stop_sign": 65.0, "cut_in": 80.0}
    p = tmp_path / "eval.json"
    p.write_text(json.dumps({"per_scenario": {k: {"runs": 4, "driving_score": v} for k, v in per.items()}}))
    assert cl.weakest_scenarios(str(p), 1) == ["parked_obstacle"]
    assert cl.weakest_scenarios(str(p), 3) == ["parked_obstacle", "obstacle_two_ways", "stop_sign"]
    assert cl.weakest_scenarios(str(p), 9) == sorted(per, key=lambda k: (per[k], k))


def test_plot_rounds_draws_one_line_per_series(tmp_path):
    rounds = {"teacher (DAgger)": [{"driving_score": 60.0}, {"driving_score": 70.5}],
              "student (on-policy)": [{"driving_score": 55.0}, {"driving_score": 61.0}, {"driving_score": 64.0}]}
    p = cl.plot_rounds(str(tmp_path), rounds, {"blind expert": 71.4})
    svg = open(p).read()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and svg.count("<circle") == 5
    assert "blind expert 71.4" in svg and "student (on-policy)" in svg


def test_ablation_gets_the_distilled_arms_steps():
    assert cl.ablation_steps({"s1_steps": 600, "onpolicy_rounds": 3, "onpolicy_steps": 300}) == 1500
    assert cl.ablation_steps({"s1_steps": 600}) == 600


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_stage1_teacher_terms_only_on_frames_the_teacher_labelled(tiny_dataset, tmp_path, kind):
    """`has` in the cached targets: 1 everywhere = the plain cached loss; 0 everywhere = no teacher term at all (the
    offline frames of `onpolicy_base_targets = "none"`)."""
    import csv
    from distill import cache_teacher_targets, train_student_driving
    from student import Student
    torch.manual_seed(0)
    data = DrivingData(tiny_dataset)
    t = Teacher(**SMALL_TEACHER).eval()
    full = cache_teacher_targets(t, data, bs=16)
    n = len(data)
    rows = []
    for name, c in [("plain", full), ("ones", dict(full, has=torch.ones(n))),
                    ("zeros", cl.no_teacher_targets(n, t.dim))]:
        torch.manual_seed(1)
        s = Student()
        out = tmp_path / name
        out.mkdir()
        cfg = {"steps": 1, "batch": 4, "lr": 1e-3, "eval_every": 10**9, "ckpt_every": 10**9, "wp_loss": kind}
        train_student_driving(s, t, data, np.arange(n), np.arange(4), str(out), cfg, cached=c)
        with open(out / "student_s1.csv") as f:
            rows.append({k: float(v) for k, v in next(csv.DictReader(f)).items() if k in ("gt", "teacher_wp", "feat",
                                                                                         "query")})
    plain, ones, zeros = rows
    for k in plain:
        assert ones[k] == pytest.approx(plain[k], rel=1e-4), k
    assert zeros["gt"] == pytest.approx(plain["gt"], rel=1e-4)
    assert zeros["teacher_wp"] == zeros["feat"] == zeros["query"] == 0.0
    assert plain["teacher_wp"] > 0 and plain["feat"] > 0


def test_a_rollout_reused_from_an_earlier_session_is_recorded_as_not_timed(tmp_path, monkeypatch):
    """A resumed run finds round 1's rollout on disk: its time was spent in a session that did not record it, so
    closedloop.json says None (the model card prints "not timed"), not the ~0 s that reading it back took."""
    class FakeEval:
        def __init__(self, *a, **k):
            pass

        def result(self):
            return {"driving_score": 50.0, "route_completion": 1.0, "runs": 2, "eval_wall_s": 3.0}

    monkeypatch.setattr(cl, "Eval", FakeEval)
    monkeypatch.setattr(cl, "rollout", lambda *a, **k: {"frames": 4})
    os.makedirs(tmp_path / "dagger" / "r1" / "data")
    (tmp_path / "dagger" / "r1" / "data" / "data_card.json").write_text("{}")
    cfg = {"round_eval_scenarios": "lane_keep", "round_eval_seeds": "1..2", "beta_decay": 0.5, "rollout_every": 5,
           "patience": 1, "min_gain": 0.0}
    rounds = cl._rounds("teacher", str(tmp_path), "rtvla", cfg, n_rounds=2, beta0=0.5, seed0=0, frames=4,
                        export=lambda out_dir, r: f"{out_dir}/p.toml", val_err=lambda: 0.1,
                        learn=lambda r, d: {"train_s": 60.0})
    assert [r["round"] for r in rounds] == [0, 1]  # DS flat after round 1: stops with patience 1
    assert rounds[1]["rollout_s"] is None
    assert rounds[1]["minutes"] == pytest.approx((rounds[1]["learn_s"] + 3.0) / 60, abs=0.01)
    assert cl.load_state(str(tmp_path))["teacher"][1]["rollout_s"] is None


def test_student_perception_head_trains_the_encoder_and_the_rounds_reload_it(tiny_dataset, tmp_path):
    """`aux_weight` > 0: the step logs an `aux` term, the checkpoint holds the head, and the encoder moves differently
    than without it (the head's gradient reaches the student's tokens); `perception_head_of` gives the rounds that
    head back, a new one when stage 1 trained none, and none at weight 0."""
    import csv
    from distill import train_student_driving
    from student import Student
    data = DrivingData(tiny_dataset)
    encoders = {}
    for w in (0.0, 1.0):
        torch.manual_seed(1)
        s = Student()
        out = tmp_path / f"w{w}"
        out.mkdir()
        cfg = {"steps": 2, "batch": 4, "lr": 1e-3, "eval_every": 10**9, "ckpt_every": 10**9, "aux_weight": w}
        train_student_driving(s, None, data, np.arange(len(data)), np.arange(4), str(out), cfg)
        with open(out / "student_s1.csv") as f:
            row = next(csv.DictReader(f))
        mods = torch.load(out / "student_s1.pt", weights_only=False)["modules"]
        assert ("aux" in row and float(row["aux"]) > 0) == (w > 0)
        assert ("perceive" in mods) == (w > 0)
        encoders[w] = torch.cat([p.flatten() for p in s.driving.encoder.parameters()])
        head = cl.perception_head_of(s, str(out / "student_s1.pt"), 0.5)
        if w > 0:
            for k, v in head.state_dict().items():
                assert torch.equal(v, mods["perceive"][k]), k
    assert not torch.allclose(encoders[0.0], encoders[1.0])
    assert cl.perception_head_of(s, str(tmp_path / "w1.0" / "student_s1.pt"), 0.0) is None


def test_balanced_object_weights_make_each_class_weigh_the_same_and_average_one():
    from distill import balanced_object_weights
    objects = torch.tensor([0] * 90 + [1] * 9 + [2])
    assert balanced_object_weights(objects, 4, 0.0) is None
    w = balanced_object_weights(objects, 4, 1.0)
    per_class = torch.stack([w[c] * (objects == c).sum() for c in range(3)])
    assert torch.allclose(per_class, per_class[0].expand(3))  # power 1: every present class weighs as much in all
    assert w[objects].mean() == pytest.approx(1.0)
    half = balanced_object_weights(objects, 4, 0.5)
    assert half[2] / half[0] == pytest.approx(90 ** 0.5)
