"""ONNX Runtime's int8 convolution is not the reference tract is held to, because it is not exact on every CPU:

* onnxruntime 1.22.1-1.24.4 on CPUs with AMX-INT8 / AVX-512 VNNI (microsoft/onnxruntime#26324): the student's 8x8
  stride-8 patchify stem (3 -> 24 channels) came out with garbage in the last output column of channels 16-23,
  different from one run to the next (tract vs that reference 0.066-0.114 m; against a fixed onnxruntime the same
  file agrees to 5e-6). The first test pins the fix, on weights within +-60.
* Without VNNI (AVX2-only CPUs) ORT's U8S8 kernels add pairs of uint8 x int8 products in int16 (VPMADDUBSW) and
  saturate: the same conv with weights +-127 and a bright sky has thousands of outputs off by up to ~117 steps under
  `qemu-x86_64 -cpu Haswell` (ONNX Runtime documents this). A CI smoke on such a machine failed its int8 parity so.

The int8 parity vectors are therefore made with the ONNX spec's own evaluator (`export.Int8Reference`); the last two
tests check that it is exact where ORT saturates, and that it reproduces the bundled student's parity vectors.
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export import Int8Reference

K, C_IN, C_OUT, H, W = 8, 3, 24, 128, 256
X_SCALE, X_ZP, W_SCALE, Y_SCALE, Y_ZP = 0.0146, 108, 0.00075, 0.0088, 0


def _stem_conv(w_max: int = 60) -> bytes:
    """The stem's QLinearConv; weights within +-w_max (+-60 keeps ORT's int16 pair sums below saturation)."""
    rng = np.random.default_rng(7)
    weights = rng.integers(-w_max, w_max, (C_OUT, C_IN, K, K), dtype=np.int8, endpoint=True)
    bias = rng.integers(-20000, 20000, C_OUT, dtype=np.int32)
    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in [
        ("x_scale", X_SCALE, np.float32), ("x_zp", X_ZP, np.uint8), ("w_scale", W_SCALE, np.float32),
        ("w_zp", 0, np.int8), ("y_scale", Y_SCALE, np.float32), ("y_zp", Y_ZP, np.uint8)]]
    inits += [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
                            ["y"], kernel_shape=[K, K], strides=[K, K], pads=[0, 0, 0, 0])
    graph = helper.make_graph([node], "stem", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, C_IN, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, C_OUT, H // K, W // K])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _exact(x: np.ndarray, model: bytes) -> np.ndarray:
    """QLinearConv by definition: int32 accumulation of (x - x_zp) * w + b, one rescale, round half to even, clamp."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(model).graph.initializer}
    w, b = inits["w"].astype(np.int64), inits["b"].astype(np.int64)
    xs = x[0].astype(np.int64) - X_ZP
    patches = xs.reshape(C_IN, H // K, K, W // K, K).transpose(1, 3, 0, 2, 4).reshape(H // K, W // K, -1)
    acc = patches @ w.reshape(C_OUT, -1).T + b
    scale = np.float32(inits["x_scale"]) * np.float32(inits["w_scale"]) / np.float32(inits["y_scale"])
    y = np.clip(np.rint(acc * np.float64(scale)) + Y_ZP, 0, 255)
    return y.transpose(2, 0, 1)[None].astype(np.uint8)


def test_onnxruntime_int8_conv_is_exact_on_the_student_stem_shape():
    model = _stem_conv()
    x = np.random.default_rng(3).integers(0, 256, (1, C_IN, H, W), dtype=np.uint8)
    want = _exact(x, model)
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for run in range(3):
            got = sess.run(None, {"x": x})[0]
            # the float rescale may round a tie the other way: one step is allowed, a wrong accumulation is not
            off = np.abs(got.astype(int) - want.astype(int))
            bad = np.argwhere(off > 1)
            assert bad.size == 0, (f"onnxruntime {ort.__version__} QLinearConv ({threads} thread(s), run {run}): "
                                   f"{len(bad)} outputs off by up to {off.max()} steps, first at {bad[:3].tolist()} "
                                   "(microsoft/onnxruntime#26324: pin a release with the fix)")


def test_the_int8_parity_reference_is_exact_where_u8s8_saturates(tmp_path):
    """Full-range weights and a saturated sky: the pairs VPMADDUBSW would clip. The reference must not."""
    model = _stem_conv(w_max=127)
    path = tmp_path / "stem.onnx"
    path.write_bytes(model)
    x = np.random.default_rng(3).integers(0, 256, (1, C_IN, H, W), dtype=np.uint8)
    x[:, :, : H // 2] = 255
    want = _exact(x, model)
    got = Int8Reference(str(path)).run(None, {"x": x})[0]
    off = np.abs(got.astype(int) - want.astype(int))
    assert off.max() <= 1, f"the ONNX reference evaluator is off by up to {off.max()} steps on {int((off > 1).sum())} outputs"
    # the case is not vacuous: the pairs of products reach int16 saturation
    w = numpy_helper.to_array([i for i in onnx.load_from_string(model).graph.initializer if i.name == "w"][0])
    assert 255 * int(np.abs(w).max()) * 2 > 32767


def test_int8_reference_reproduces_the_bundled_parity_vectors():
    """The bundled int8 student's vectors were made with ORT on an exact (VNNI) CPU; the reference must agree, so
    vectors from either source hold tract to the same numbers."""
    import base64
    import json
    import os
    from data import normalise_batch
    bundle = os.path.join(os.path.dirname(__file__), "..", "..", "student")
    with open(os.path.join(bundle, "student_int8.parity.json")) as fh:
        par = json.load(fh)
    case = par["cases"][0]
    rgb = np.frombuffer(base64.b64decode(case["rgb_b64"]), np.uint8).reshape(par["frame_height"], par["frame_width"], 3)
    feed = {"image": normalise_batch(rgb[None]).numpy(), "speed": np.array([[case["speed"]]], np.float32),
            "target_points": np.array([case["target_points"]], np.float32)}
    path, _, feats = Int8Reference(os.path.join(bundle, "student_int8.onnx")).run(None, feed)
    assert np.abs(path.reshape(-1) - np.array(case["path"]).reshape(-1)).max() < 1e-4
    assert np.abs(feats.reshape(-1) - np.array(case["features"])).max() < 1e-5
