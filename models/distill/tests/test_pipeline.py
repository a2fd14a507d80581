"""Shapes, a tiny overfit step, the KV-cache step vs the parallel decoder, and ONNX export parity."""
import csv
import os
import time

import numpy as np
import pytest
import torch

from data import (ACTIONS, BOS, EOS, OBJECTS, TEMPLATES, UNK, VOCAB, DrivingData, normalise_batch,
                  oversample_starts, oversampled)
from distill import noisy_targets, text_io, train_student_driving
from export import export_driving, export_language
import pipeline
from student import STUDENT_SIZES, Student
from teacher import Teacher

SMALL_TEACHER = dict(dim=64, depth=2, heads=2, dec_depth=1)


def test_vocab_roundtrip():
    s = "Decelerate to stay behind the car in 12 m."
    ids = VOCAB.encode(s)
    assert ids[0] == BOS and EOS in ids and 3 not in ids  # no <unk>
    assert VOCAB.decode(ids) == s.lower()


def test_normalise_matches_runtime_formula():
    img = np.full((1, 144, 256, 3), 200, dtype=np.uint8)
    img[:, 128:] = 0  # hood rows are cropped away
    x = normalise_batch(img)
    assert x.shape == (1, 3, 128, 256)
    assert torch.allclose(x[0, 0], torch.full((128, 256), (200 / 255 - 0.485) / 0.229))


def test_data_batch_shapes(tiny_dataset):
    d = DrivingData(tiny_dataset)
    b = d.batch(np.arange(4))
    assert b["image"].shape == (4, 3, 128, 256)
    assert b["speed"].shape == (4, 1) and b["target_points"].shape == (4, 2, 2)
    assert b["path"].shape == (4, 20, 2) and b["speed_wps"].shape == (4, 10, 2)
    assert (b["tokens"] != 3).all()  # every commentary word is in the template vocabulary


def test_templates_match_the_expert():
    """data.TEMPLATES must hold every sentence the simulator's expert says (src/sim/expert.rs `commentary`): a missing
    one puts <unk> words into the targets (the oncoming-car pair was missing until 2026-11-26)."""
    import re
    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "src", "sim", "expert.rs")).read()
    body = src[src.index("pub fn commentary("):src.index("pub fn describe(")]
    said = {t.replace("{d}", "") for t in re.findall(r'"([A-Z][^"]*\.)"', body)}
    assert len(said) >= 20
    ours = {t.replace("{d}", "") for t in TEMPLATES}
    assert said == ours, f"missing: {said - ours}, extra: {ours - said}"
    assert all(UNK not in VOCAB.encode(t.format(d=12)) for t in TEMPLATES)


def test_oversample_starts_repeats_only_start_frames(tiny_dataset):
    d = DrivingData(tiny_dataset)
    idx = np.arange(len(d))
    d.speed[:] = 5.0
    d.speed[[1, 2, 3], 0] = 0.0  # at rest: 1 and 2 drive off in the plan, 3 waits
    d.speed_wps[[1, 2], -1, 0] = 4.0
    d.speed_wps[3, :, 0] = 0.0
    assert (oversample_starts(d, idx, 1) == idx).all()
    out = oversample_starts(d, idx, 3)
    counts = np.bincount(out, minlength=len(d))
    assert counts[1] == counts[2] == 3
    assert counts[3] == 1 and (np.delete(counts, [1, 2]) == 1).all()


def test_oversampled_repeats_go_around_frames_on_top_of_starts(tiny_dataset):
    d = DrivingData(tiny_dataset)
    idx = np.arange(len(d))
    d.speed[:] = 5.0
    d.action[:] = ACTIONS.index("keep_speed")
    d.action[[4, 5]] = ACTIONS.index("go_around")
    assert (oversampled(d, idx, {}) == idx).all()
    counts = np.bincount(oversampled(d, idx, {"start_boost": 3, "bypass_boost": 4}), minlength=len(d))
    assert counts[4] == counts[5] == 4 and (np.delete(counts, [4, 5]) == 1).all()


def test_oversampled_repeats_braking_for_a_car_ahead_only(tiny_dataset):
    d = DrivingData(tiny_dataset)
    idx = np.arange(len(d))
    d.speed[:] = 5.0
    d.action[:] = ACTIONS.index("keep_speed")
    d.object[:] = OBJECTS.index("none")
    d.action[[1, 2, 3]] = torch.tensor([ACTIONS.index(a) for a in ("decelerate", "stop", "wait")])
    d.object[[1, 2, 3, 4]] = OBJECTS.index("car")  # 4 keeps its speed behind the car: not a brake frame
    d.action[5], d.object[5] = ACTIONS.index("stop"), OBJECTS.index("red_light")  # slows, but not for a car
    assert (oversampled(d, idx, {"brake_boost": 1}) == idx).all()
    counts = np.bincount(oversampled(d, idx, {"brake_boost": 3}), minlength=len(d))
    assert (counts[[1, 2, 3]] == 3).all() and (np.delete(counts, [1, 2, 3]) == 1).all()


def test_conv_stem_teacher_keeps_the_patch_grid():
    img, spd, tp = torch.randn(2, 3, 128, 256), torch.ones(2, 1), torch.ones(2, 2, 2)
    patch, conv = Teacher(**SMALL_TEACHER), Teacher(**SMALL_TEACHER, stem="conv")
    assert conv.cfg["stem"] == "conv" and patch.cfg["stem"] == "patch"
    assert conv.encode(img).shape == patch.encode(img).shape == (2, 8 * 16, 64)
    with pytest.raises(ValueError, match="power of two"):
        Teacher(**dict(SMALL_TEACHER, patch=12), stem="conv")
    with pytest.raises(ValueError, match="stem"):
        Teacher(**SMALL_TEACHER, stem="cnv")


def test_model_shapes():
    t = Teacher(**SMALL_TEACHER)
    s = Student()
    img, spd, tp = torch.randn(2, 3, 128, 256), torch.ones(2, 1), torch.ones(2, 2, 2)
    tokens = torch.tensor([VOCAB.encode("Follow the route. Keep the current speed.")] * 2)
    o = t(img, spd, tp, text_io(tokens)[0])
    assert o["path"].shape == (2, 20, 2) and o["speed_wps"].shape == (2, 10, 2)
    assert o["logits"].shape == (2, tokens.shape[1] - 1, len(VOCAB))
    path, sw, feats = s.driving(img, spd, tp)
    assert path.shape == (2, 20, 2) and sw.shape == (2, 10, 2) and feats.shape == (2, 32, 64)  # <= 2048 values: runtime MAX_FEATURES
    assert s.language((feats, spd, spd, tp, path, sw), text_io(tokens)[0]).shape == (2, tokens.shape[1] - 1, len(VOCAB))
    ids, p2, s2 = t.generate(img, spd, tp, max_len=5)
    assert p2.shape == (2, 20, 2) and s2.shape == (2, 10, 2)


OLD_BLOCK = dict(proj=True, query_self_attn=True, mlp_ratio=4)


def test_l1_waypoint_loss_keeps_the_majority_answer_where_l2_averages():
    """Two answers for one input (wait: 0 m, go: 10 m; wait twice as often): the plan that minimises squared error is
    their mean, 3.3 m -- a start too slow for the controller -- while smooth L1 keeps the majority's 0 m."""
    from distill import wp_loss
    tgt = torch.tensor([0.0, 0.0, 10.0]).view(3, 1, 1).expand(3, 10, 2)
    best = {}
    for kind in ("l2", "l1"):
        x = torch.zeros(1, 1, 1, requires_grad=True)
        opt = torch.optim.Adam([x], lr=0.05)
        for _ in range(600):
            opt.zero_grad()
            p = x.expand(3, 10, 2)
            wp_loss(p, p, tgt, tgt, kind).backward()
            opt.step()
        best[kind] = float(x)
    assert best["l2"] == pytest.approx(10 / 3, abs=0.1)
    assert abs(best["l1"]) < 0.3


@pytest.mark.parametrize("cfg", [{}, dict(OLD_BLOCK, widths=(24, 32, 64, 96), stem="conv", res=None, dim=96, heads=4, depth=2),
                                 dict(OLD_BLOCK, widths=(32, 48), heads=2),
                                 dict(OLD_BLOCK, widths=(16, 32, 48), stem="patch4", res=(False, True), dim=64, depth=1),
                                 dict(widths=(64,), stem="patch16", res=()),
                                 *STUDENT_SIZES.values()])
def test_student_encoders_keep_the_runtime_contract(cfg):
    """Every encoder variant (default patch8 without projection, the first-2026-11-26 patch8, the 2026-11-25 CNN,
    patch4, patch16) has stride 16 and [B, 32, 64] features."""
    from student import StudentDriving
    d = StudentDriving(**cfg)
    path, sw, feats = d(torch.randn(1, 3, 128, 256), torch.ones(1, 1), torch.ones(1, 2, 2))
    assert path.shape == (1, 20, 2) and sw.shape == (1, 10, 2) and feats.shape == (1, 32, 64)
    assert d(torch.randn(1, 3, 128, 256), torch.ones(1, 1), torch.ones(1, 2, 2), return_queries=True)[2].shape == (1, 128, 64)


def test_teacher_config_of_a_checkpoint(tmp_path):
    """A reused teacher checkpoint is rebuilt as it was trained: its saved config; a checkpoint from before configs were
    saved is the legacy language head (lm_aligned=False), whatever today's default says."""
    from distill import save_ckpt, teacher_config_of
    default = dict(SMALL_TEACHER, lm_aligned=True)
    assert teacher_config_of(str(tmp_path / "none.pt"), default) == default
    legacy = tmp_path / "legacy.pt"
    save_ckpt(str(legacy), 1, {"teacher": Teacher(**SMALL_TEACHER)}, None, extra={"elapsed_s": 1.0})
    assert teacher_config_of(str(legacy), default) == dict(default, lm_aligned=False, stem="patch", speed_cap=None)
    assert teacher_config_of(str(legacy), dict(default, stem="conv"))["stem"] == "patch"  # no conv stem back then
    t = Teacher(**default)
    saved = tmp_path / "saved.pt"
    save_ckpt(str(saved), 1, {"teacher": t}, None, extra={"teacher_cfg": t.cfg})
    assert Teacher(**teacher_config_of(str(saved), dict(default, lm_aligned=False))).lm_aligned
    other = tmp_path / "other_vocab.pt"
    save_ckpt(str(other), 1, {"teacher": Teacher(**dict(default, vocab=len(VOCAB) - 3))}, None, extra={})
    with pytest.raises(SystemExit, match="vocabulary"):
        teacher_config_of(str(other), default)


def test_no_depthwise_convs():
    for m in Student().driving.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.groups == 1


def test_kv_cache_step_matches_parallel_decoder():
    torch.manual_seed(0)
    lang = Student().language.eval()
    ctx = (torch.randn(1, 128, 64), torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 2, 2), torch.ones(1, 20, 2),
           torch.ones(1, 10, 2))
    tokens = torch.tensor([VOCAB.encode("Stop at the stop sign in 7 m.")])[:, :8]
    with torch.no_grad():
        full = lang(ctx, tokens)
        lat = lang.resampler(*ctx)
        k, v = lang.decoder.empty_cache(1)
        for p in range(tokens.shape[1]):
            logits, k, v = lang.decoder.step(tokens[:, p : p + 1], torch.tensor([p]), lat, k, v)
            assert torch.allclose(logits, full[:, p], atol=1e-4)


def test_tiny_overfit_step(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    d = DrivingData(tiny_dataset)
    idx = np.arange(8)
    t = Teacher(**SMALL_TEACHER).eval()
    s = Student()
    cfg = {"steps": 25, "batch": 8, "lr": 2e-3, "warmup": 1, "eval_every": 10**9, "ckpt_every": 10**9}
    b = d.batch(idx)
    with torch.no_grad():
        s.driving.eval()
        before = torch.nn.functional.mse_loss(s.driving(b["image"], b["speed"], b["target_points"])[0], b["path"])
    train_student_driving(s, t, d, idx, idx, str(tmp_path), cfg)
    with torch.no_grad():
        s.driving.eval()
        after = torch.nn.functional.mse_loss(s.driving(b["image"], b["speed"], b["target_points"])[0], b["path"])
    assert after < 0.5 * before, (before, after)
    # resumable: a rerun with the same step count finds the finished checkpoint and skips
    r = train_student_driving(s, t, d, idx, idx, str(tmp_path), cfg)
    assert r["sec_per_step"] is None and r["start_step"] == 25


def test_export_parity(tmp_path):
    s = Student()
    r = export_driving(s.driving, str(tmp_path), "student")
    assert r["max_abs_diff"] < 1e-3
    text = open(r["manifest"]).read()
    assert 'kind = "student"' in text and "shape = [1, 3, 128, 256]" in text and "sha256" in text
    rl = export_language(s.language, r["features_shape"], str(tmp_path), features_from=[r["onnx"]])
    assert rl["max_abs_diff"] < 1e-3
    from export import sha256
    assert f'features_from = ["{sha256(r["onnx"])}"]' in open(rl["manifest"]).read()


def test_speed_cap_hides_the_speed_from_the_plan_and_keeps_the_graph_inputs(tmp_path):
    """speed_cap=0: the plan is the same at every speed, and the exported graph still takes the runtime's speed input;
    a cap of 3 m/s reads 5 and 9 m/s alike; no cap leaves the graph as it was (no clamp node)."""
    import onnx
    import onnxruntime as ort
    from student import StudentDriving
    img, tp = torch.randn(1, 3, 128, 256), torch.tensor([[[15.0, 0.5], [35.0, 1.0]]])

    def plan(model, v):
        with torch.no_grad():
            return model(img, torch.tensor([[v]]), tp)[1]

    torch.manual_seed(0)
    blind, capped, full = (StudentDriving(speed_cap=c).eval() for c in (0.0, 3.0, None))
    assert torch.equal(plan(blind, 0.0), plan(blind, 12.0))
    assert torch.equal(plan(capped, 5.0), plan(capped, 9.0)) and not torch.equal(plan(capped, 1.0), plan(capped, 5.0))
    assert not torch.equal(plan(full, 5.0), plan(full, 9.0))
    t = Teacher(**SMALL_TEACHER, speed_cap=0.0).eval()
    with torch.no_grad():
        text = torch.full((1, 1), BOS)
        at_rest, at_9 = (t(img, torch.full((1, 1), v), tp, text)["speed_wps"] for v in (0.0, 9.0))
    assert torch.equal(at_rest, at_9)
    ops = {}
    for name, model in (("blind", blind), ("full", full)):
        r = export_driving(model, str(tmp_path / name), "student")
        assert r["max_abs_diff"] < 1e-3
        ops[name] = {n.op_type for n in onnx.load(r["onnx"]).graph.node}
        sess = ort.InferenceSession(r["onnx"], providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["image", "speed", "target_points"]
    assert {"Clip", "Min"} & ops["blind"] and not {"Clip", "Min"} & ops["full"]
    run = ort.InferenceSession(str(tmp_path / "blind" / "student.onnx"), providers=["CPUExecutionProvider"]).run
    feeds = [{"image": img.numpy(), "speed": np.array([[v]], np.float32), "target_points": tp.numpy()}
             for v in (0.0, 12.0)]
    assert np.array_equal(run(None, feeds[0])[1], run(None, feeds[1])[1])


def test_conv_stem_teacher_exports_with_parity(tmp_path):
    from export import TeacherVisionOnly
    r = export_driving(TeacherVisionOnly(Teacher(**SMALL_TEACHER, stem="conv")), str(tmp_path), "teacher", kind="teacher")
    assert r["max_abs_diff"] < 1e-3 and r["features_shape"][-1] == SMALL_TEACHER["dim"]


def test_commentary_metrics_runs(tiny_dataset):
    from data import template_key
    from distill import commentary_metrics
    d = DrivingData(tiny_dataset)
    assert template_key("Stop at the stop sign in 7 m.") == "stop at the stop sign in # m ."
    assert all(isinstance(v, tuple) for v in d.template_labels.values())
    m = commentary_metrics(Student(), d, np.arange(4), limit=4)
    assert m["n"] == 4 and 0.0 <= m["action_object"] <= 1.0


@pytest.mark.parametrize("lm_aligned", [False, True])
def test_teacher_cached_generation_matches_generate(lm_aligned):
    torch.manual_seed(0)
    t = Teacher(**SMALL_TEACHER, lm_aligned=lm_aligned).eval()
    img, spd, tp = torch.randn(2, 3, 128, 256), torch.tensor([[0.0], [7.0]]), torch.randn(2, 2, 2) * 10
    with torch.no_grad():
        ids, path, sw = t.generate(img, spd, tp)
        ids2, path2, sw2, _ = t.generate_cached(img, spd, tp)
    assert torch.equal(ids, ids2)
    assert torch.allclose(path, path2, atol=1e-4) and torch.allclose(sw, sw2, atol=1e-4)


@pytest.mark.parametrize("inputs", ["plan", "features", "tokens", "image"])
def test_commentary_probe_reads_each_input_set(tiny_dataset, inputs):
    """probe.py's classifier takes exactly the driving branch's outputs it names and gives action + object logits."""
    from data import ACTIONS, OBJECTS, DrivingData
    from probe import Probe, driving_inputs
    data = DrivingData(tiny_dataset)
    x = driving_inputs(Student().driving.eval(), data, bs=16)
    assert x["plan"].shape[0] == len(data) and x["features"].shape[1:] == (32, 64) and x["tokens"].shape[1:] == (128, 64)
    idx = np.arange(4)
    vis = {"plan": None, "features": x["features"][idx], "tokens": x["tokens"][idx],
           "image": data.batch(idx)["image"]}[inputs]
    assert Probe(inputs)(x["plan"][idx], vis).shape == (4, len(ACTIONS) + len(OBJECTS))


def test_probe_pools_tokens_as_the_exported_features(tiny_dataset):
    """probe.py takes the snapshot features from the full-resolution tokens (one driving pass): the same values the
    driving graph exports as `features`; --plan expert swaps only the path + speed waypoints of the plan vector."""
    from data import DrivingData
    from layers import ego_features
    from probe import driving_inputs
    from student import StudentEncoder
    torch.manual_seed(0)
    drv = Student().driving.eval()
    data = DrivingData(tiny_dataset)
    b = data.batch(np.arange(5))
    with torch.no_grad():
        _, _, full, _ = drv(b["image"], b["speed"], b["target_points"], return_queries=True)
        _, _, pooled = drv(b["image"], b["speed"], b["target_points"])
        torch.testing.assert_close(StudentEncoder.pool(full), pooled)
        x = driving_inputs(drv, data, bs=16, plan="expert")
    want = ego_features(b["speed"], b["speed_prev"], b["target_points"], b["path"], b["speed_wps"])
    torch.testing.assert_close(x["plan"][:5], want)
    torch.testing.assert_close(x["features"][:5].float(), pooled, atol=2e-3, rtol=2e-3)


def test_cached_teacher_targets_match_the_live_teacher(tiny_dataset, tmp_path):
    """seeds.py's stage 1 reads cached teacher targets: the same as the teacher's forward (f16 for the tokens), and a
    cached stage-1 step gives the live step's losses."""
    from distill import cache_teacher_targets, teacher_targets
    torch.manual_seed(0)
    data = DrivingData(tiny_dataset)
    t = Teacher(**SMALL_TEACHER).eval()
    cached = cache_teacher_targets(t, data, bs=16)
    idx = np.array([3, 17, 30])
    live = teacher_targets(t, data.batch(idx))
    for k, v in live.items():
        assert cached[k].shape[0] == len(data)
        torch.testing.assert_close(cached[k][idx].float(), v, atol=5e-3, rtol=5e-3)
    losses = []
    for c in (None, cached):
        torch.manual_seed(1)
        s = Student()
        cfg = {"steps": 1, "batch": 4, "lr": 1e-3, "eval_every": 10**9, "ckpt_every": 10**9}
        out = tmp_path / ("cached" if c else "live")
        out.mkdir()
        train_student_driving(s, t, data, np.arange(len(data)), np.arange(4), str(out), cfg, cached=c)
        with open(out / "student_s1.csv") as f:
            row = next(csv.DictReader(f))
        losses.append([float(row[k]) for k in ("gt", "teacher_wp", "feat", "query", "loss")])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def test_seed_study_arguments():
    """seeds.py imports (its pipeline, export and distill imports resolve) and reads A..B as an exclusive range."""
    from seeds import span
    assert list(span("0..3")) == [0, 1, 2] and list(span("5..6")) == [5]


def test_seed_study_paired_summary():
    """seeds.py's paired comparison: mean/std of the per-seed differences, the paired t and an exact two-sided sign
    test (10 of 12 ahead: 2 * (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 0.0386)."""
    from seeds import paired_summary
    diff = [0.7, 0.7, 6.9, 0.7, -2.5, 2.7, 0.3, 0.6, 2.4, 1.8, -1.1, 3.6]
    p = paired_summary([60.0 + d for d in diff], [60.0] * len(diff))
    assert p["n"] == 12 and p["ahead"] == 10
    assert p["mean"] == pytest.approx(sum(diff) / 12)
    assert p["t"] == pytest.approx(p["mean"] / (p["std"] / 12 ** 0.5))
    assert p["sign_p"] == pytest.approx(2 * (66 + 12 + 1) / 4096)
    # symmetric: the arm behind gets the same sign-test p, and an even split is p = 1
    assert paired_summary([60.0] * 12, [60.0 + d for d in diff])["sign_p"] == pytest.approx(p["sign_p"])
    assert paired_summary([1.0, 2.0], [2.0, 1.0])["sign_p"] == 1.0


def test_seal_manifest_covers_every_byte_before_the_integrity_table():
    import hashlib
    import export
    body = '[model]\nname = "m"\n\n[preprocess]\nmean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\n'
    sealed = export.seal_manifest(body)
    assert sealed.startswith(body + "[integrity]\n")
    assert hashlib.sha256(body.encode()).hexdigest() in sealed
    assert export.seal_manifest(sealed) == sealed, "sealing again changes nothing"
    assert export.seal_manifest(sealed.replace("0.2, 0.2, 0.2", "0.3, 0.2, 0.2")) != sealed


def test_noisy_targets_shift_both_points_sideways_by_one_draw_and_zero_draws_nothing():
    tp = torch.tensor([[[10.0, 0.5], [30.0, 2.0]], [[8.0, -1.0], [28.0, -3.0]]])
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    assert noisy_targets(tp, 0.0, gen) is tp
    assert torch.equal(gen.get_state(), state)
    out = noisy_targets(tp, 1.5, gen)
    assert torch.equal(out[:, :, 0], tp[:, :, 0])
    shift = out[:, :, 1] - tp[:, :, 1]
    assert torch.allclose(shift[:, 0], shift[:, 1])
    assert bool((shift[:, 0].abs() > 1e-3).all())
    assert torch.equal(tp[0, 0], torch.tensor([10.0, 0.5]))


def test_perception_head_reads_the_visual_tokens_and_skips_unknown_targets(tiny_dataset, tmp_path):
    from distill import perception_loss, train_teacher
    from export import TeacherVisionOnly
    d = DrivingData(tiny_dataset)
    b = d.batch(np.arange(8))
    assert b["target_speed"].shape == (8,) and b["object_dist"].shape == (8,)
    with pytest.raises(ValueError, match="perception head"):
        Teacher(**SMALL_TEACHER).perceive(torch.zeros(1, 128, 64))
    t = Teacher(**SMALL_TEACHER, aux=True)
    p = t.perceive(t.encode(b["image"]))
    assert p["object"].shape == (8, len(OBJECTS)) and p["action"].shape == (8, len(ACTIONS))
    b["object_dist"][:] = float("nan")  # no frame reacts to an object at a known distance: that term is left out
    assert torch.isfinite(perception_loss(p, b))
    train_teacher(t, d, np.arange(len(d)), np.arange(4), str(tmp_path), dict(steps=2, batch=4, lr=1e-3, w_aux=0.5))
    with open(tmp_path / "teacher.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["aux"]) > 0 for r in rows)
    # The head is a training signal only: the exported graph is the same vision-only teacher, with parity.
    r = export_driving(TeacherVisionOnly(t), str(tmp_path / "x"), "teacher", kind="teacher")
    assert r["max_abs_diff"] < 1e-3


def test_a_resumed_run_keeps_the_seconds_its_rounds_cost_before():
    """The DAgger and on-policy rounds resume from disk; a run resumed to redo a later stage must not report them as
    costing the few seconds of this invocation (they go into every exported manifest's provenance)."""
    import time

    from pipeline import round_timings
    t0 = time.time() - 2.0
    assert 102.0 <= round_timings({"dagger_teacher": {"elapsed_s": 100.0}}, "dagger_teacher", [], t0)["elapsed_s"] < 110.0
    assert 2.0 <= round_timings({}, "onpolicy_student", [], t0)["elapsed_s"] < 10.0  # a first run: this invocation's


def test_stage2_extra_frames_come_after_the_training_indices(tiny_dataset, tmp_path):
    import shutil
    from pipeline import with_frames
    base = DrivingData(tiny_dataset)
    tr, _ = base.split()
    assert with_frames(base, tr, None) == (base, tr)
    other = str(tmp_path / "extra")
    shutil.copytree(tiny_dataset, other)
    extra = DrivingData(other)
    both, idx = with_frames(base, tr, extra)
    assert len(idx) == len(tr) + len(extra) and list(idx[: len(tr)]) == list(tr)
    got = both.batch(idx[len(tr):][:2])
    torch.testing.assert_close(got["image"], extra.batch([0, 1])["image"])


def test_stage2_extra_frames_refuse_a_directory_of_another_size(tiny_dataset, tmp_path):
    import shutil
    from pipeline import PRESETS, language_frames
    assert language_frames(None, str(tmp_path), dict(PRESETS["closedloop"], s2_extra_frames=0)) is None  # 0: none
    shutil.copytree(tiny_dataset, str(tmp_path / "dataset_s2"))
    frames = len(DrivingData(tiny_dataset))
    cfg = dict(PRESETS["closedloop"], s2_extra_frames=frames)
    assert len(language_frames("/nonexistent/rtvla", str(tmp_path), cfg)) == frames  # reused, nothing rendered
    with pytest.raises(SystemExit, match="remove that directory"):
        language_frames(None, str(tmp_path), dict(cfg, s2_extra_frames=frames + 1))


def test_planned_data_serves_the_frozen_driving_branchs_outputs(tiny_dataset):
    from distill import PlannedData, language_context, torch_plan
    torch.manual_seed(0)
    d = DrivingData(tiny_dataset)
    drv = Student().driving.eval()
    idx = np.arange(10)
    planned = PlannedData(d, idx, torch_plan(drv), batch=4)  # chunks of 4: the last one is short
    b = planned.batch([7, 2, 9])
    assert "image" not in b and planned.template_labels == d.template_labels
    raw = d.batch([7, 2, 9])
    with torch.no_grad():
        for got, want in zip(language_context(None, b), language_context(drv, raw)):
            torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="no precomputed plan"):
        planned.batch([10])
    assert "image" in PlannedData(d, idx, torch_plan(drv), images=True).batch([0])


def test_onnx_plan_is_the_exported_graphs_outputs(tiny_dataset, tmp_path):
    from distill import torch_plan
    from pipeline import onnx_plan
    torch.manual_seed(0)
    drv = Student().driving.eval()
    r = export_driving(drv, str(tmp_path), "student")
    b = DrivingData(tiny_dataset).batch([0, 5, 11])
    with torch.no_grad():
        for got, want in zip(onnx_plan(r["onnx"])(b), torch_plan(drv)(b)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_language_only_retrains_stage_2_on_a_bundles_graphs(tiny_dataset, tmp_path):
    import shutil
    import tomllib
    from types import SimpleNamespace
    from export import sha256
    from pipeline import PRESETS, language_only, student_config
    cfg = dict(PRESETS["smoke"], s2_data="offline", s2_w_kl=0.0, s2_steps=3)
    bundle = tmp_path / "bundle"
    for graph, prefix in (("student", "language"), ("student_nodistill", "language_nodistill")):
        torch.manual_seed(1)
        s = Student(driving=student_config(cfg))
        r = export_driving(s.driving, str(bundle), graph)
        export_language(s.language, r["features_shape"], str(bundle), {"preset": "smoke", "trained": False,
                        "train_stages_s": "x_s1 2.0 + " + ("student_s2" if graph == "student" else "ablation_s2") + " 9.0"},
                        prefix=prefix, features_from=[r["onnx"]])
    shutil.copy(bundle / "student.onnx", bundle / "student_int8.onnx")
    d = DrivingData(tiny_dataset)
    tr, va = d.split()

    def stage_cfg(steps, lr, **extra):
        return {"steps": steps, "batch": 4, "lr": lr, "eval_every": 2, "ckpt_every": 2, "wp_loss": "l2", **extra}

    run = tmp_path / "run"
    t = language_only(str(bundle), SimpleNamespace(rtvla=None), cfg, str(run), d, tr, va, stage_cfg)
    assert t["student_s2"]["steps"] == 3 and 0 <= t["ablation_s2_val_commentary"]["action_object"] <= 1
    with open(run / "export" / "language.toml", "rb") as f:
        man = tomllib.load(f)
    assert man["io"]["features_from"] == [sha256(str(bundle / "student.onnx")), sha256(str(bundle / "student_int8.onnx"))]
    prov = man["provenance"]
    assert prov["s2_steps"] == 3 and prov["preset"] == "smoke" and prov["language_only"].startswith("stage 2 retrained")
    assert prov["train_stages_s"].startswith("x_s1 2.0 + student_s2 ") and "9.0" not in prov["train_stages_s"]
    with pytest.raises(SystemExit, match="s2_data=offline and s2_w_kl=0"):
        language_only(str(bundle), SimpleNamespace(rtvla=None), dict(cfg, s2_w_kl=0.5), str(run), d, tr, va, stage_cfg)
    (bundle / "student_nodistill.onnx").unlink()
    with pytest.raises(SystemExit, match="missing .*student_nodistill.onnx"):
        language_only(str(bundle), SimpleNamespace(rtvla=None), cfg, str(tmp_path / "run2"), d, tr, va, stage_cfg)


def test_timing_per_step_cancels_what_a_stage_does_once(tmp_path):
    # a fake stage: a one-off cost (stage 2's plan pass) plus a cost per step; the checkpoint it leaves is removed
    import timing
    ckpt = tmp_path / "stage.pt"

    def train(n: int) -> None:
        time.sleep(0.05 + 0.01 * n)
        ckpt.write_bytes(b"x")

    assert abs(timing.per_step(train, str(ckpt), 10) - 0.01) < 0.003
    assert not ckpt.exists()


def test_machine_names_the_vector_isa():
    m = pipeline.machine()
    assert m["cpus"] >= 1 and isinstance(m["cpu"], str) and m["torch_cpu_capability"]
    assert set(m["isa"]) <= {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"}


def test_stage_summary_reads_numbers_and_stage_entries_in_pipeline_order():
    timings = {"preset": "smoke", "config": {}, "student_s1": {"elapsed_s": 120.0, "steps": 3},
               "dataset_s": 6.0, "dagger_teacher": {"rounds": [], "elapsed_s": 600.0}, "val": {"x": 1.0},
               "teacher": {"elapsed_s": 240.0}}
    stages = pipeline.stage_seconds(timings)
    assert list(stages) == ["dataset_s", "teacher", "dagger_teacher", "student_s1"]
    # the teacher's pass over the offline frames (onpolicy_base_targets = "teacher") is a stage of its own, not "rest"
    with_targets = pipeline.stage_seconds(dict(timings, teacher_targets_s=138.0))
    assert list(with_targets) == ["dataset_s", "teacher", "dagger_teacher", "teacher_targets_s", "student_s1"]
    assert stages["dagger_teacher"] == 600.0
    table = pipeline.stage_table(stages, total_s=1026.0)
    assert "teacher, DAgger rounds" in table and "10.0   62.1 %" in table  # 600 s of the stages' 966 s
    assert table.splitlines()[-2].split()[-1] == "1.0"  # rest: 1026 - 966 s
    assert table.splitlines()[-1].split()[-1] == "17.1"


def test_a_student_that_kept_round_0_of_ground_truth_rounds_learnt_nothing_from_the_teacher():
    closed = {"onpolicy_rounds": 3, "onpolicy_base_targets": "none", "s2_w_kl": 0.0, "s2_data": "offline"}
    rounds = lambda *ds: {"onpolicy_student": {"rounds": [{"driving_score": d} for d in ds]}}  # noqa: E731
    assert pipeline.teacher_in_student(closed, rounds(77.8, 76.3, 75.5)) == []  # run cl-time, 2026-12-04
    # stage 2 on the aggregate reads the drives up to the kept round only: none when round 0 is kept
    assert pipeline.teacher_in_student(dict(closed, s2_data="aggregate"), rounds(77.8, 76.3, 75.5)) == []
    assert pipeline.teacher_in_student(closed, rounds(77.0, 77.9, 80.4, 80.5)) == [
        "on-policy rounds 1-3, labelled by the teacher"]
    # offline distillation (no rounds): stage 1 reads the teacher's targets; the KL in stage 2 counts as well
    assert pipeline.teacher_in_student(dict(closed, onpolicy_rounds=0, s2_w_kl=0.5), {}) == [
        "stage 1 on the teacher's targets", "stage 2's KL to the teacher's commentary"]
    assert pipeline.teacher_in_student(dict(closed, onpolicy_base_targets="teacher"), rounds(80.0, 70.0)) == [
        "stage 1 on the teacher's targets"]


def test_offline_teacher_targets_follow_the_preset_for_the_pipeline_and_the_seed_study(tmp_path):
    class Frames:  # the helper reads only the frame count, the teacher only its width
        def __len__(self):
            return 5
    teacher = type("T", (), {"dim": 8})()
    closed = {"onpolicy_rounds": 3, "onpolicy_base_targets": "none"}
    none = pipeline.offline_teacher_targets(closed, teacher, Frames(), str(tmp_path / "t.pt"))
    assert none["feat"].shape[:2] == (5, 8) and not none["has"].any()  # ground truth only: no teacher pass
    assert not (tmp_path / "t.pt").exists()
    # offline distillation without rounds: stage 1 runs the teacher batch by batch
    assert pipeline.offline_teacher_targets(dict(closed, onpolicy_rounds=0), teacher, Frames(), "unused") is None
    # stage 1 on the teacher's targets with rounds: one pass, cached (here already there, so the teacher is not run)
    torch.save({"path": torch.ones(5, 20, 2)}, tmp_path / "t.pt")
    got = pipeline.offline_teacher_targets(dict(closed, onpolicy_base_targets="teacher"), teacher, Frames(),
                                           str(tmp_path / "t.pt"))
    assert torch.equal(got["path"], torch.ones(5, 20, 2))
