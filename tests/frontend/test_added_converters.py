"""The converters tvmcompress.onnx_ops adds for ops TVM 0.27 lacks or converts wrongly, in one model compiled for
the host and compared with onnx's reference evaluator: Celu, Elu on float16, SwiGLU, CumProd, BitCast,
LpNormalization, the window functions, EyeLike with a dtype, CausalConvWithState, LinearAttention, Resize with
`axes`, and float16 MatMul / ReduceSum / Softmax accumulated in float32."""

from __future__ import annotations

import numpy as np
import pytest
from frontend_models import make_model, value
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import tvmcompress
from tvmcompress.frontend import unsupported_ops

F, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, **attrs)


def _model_and_feeds():
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 5)).astype(np.float32),
        "b": rng.standard_normal((2, 5)).astype(np.float32),
        "seq": rng.standard_normal((1, 3, 6)).astype(np.float32),
        "state": rng.standard_normal((1, 3, 2)).astype(np.float32),
        "q": rng.standard_normal((1, 3, 8)).astype(np.float32),
        "k": rng.standard_normal((1, 3, 4)).astype(np.float32),
        "v": rng.standard_normal((1, 3, 4)).astype(np.float32),
        "kv": rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
        "decay": -np.abs(rng.standard_normal((1, 3, 1))).astype(np.float32),
        "beta": rng.uniform(0, 1, (1, 3, 1)).astype(np.float32),
        "img": rng.standard_normal((1, 1, 2, 3)).astype(np.float32),
        "h1": (rng.standard_normal((8, 256)) * 0.5).astype(np.float16),
        "h2": (rng.standard_normal((256, 8)) * 0.5).astype(np.float16),
        "empty": np.zeros((2, 0, 3), np.float32),
    }
    inits = [
        helper.make_tensor("axis1", TensorProto.INT64, [], [1]),
        helper.make_tensor("size10", TensorProto.INT64, [], [10]),
        helper.make_tensor("w", F, [3, 1, 3], rng.standard_normal(9).tolist()),
        helper.make_tensor("bias", F, [3], [0.1, -0.2, 0.3]),
        helper.make_tensor("scales", F, [2], [3.0, 2.0]),
        helper.make_tensor("sum_axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        _node("Celu", ["x"], ["celu"], alpha=2.0),
        _node("Cast", ["x"], ["x16"], to=F16),
        _node("Elu", ["x16"], ["elu16"], alpha=0.5),
        _node("SwiGLU", ["x", "b"], ["swiglu"], alpha=1.5),
        _node("CumProd", ["x", "axis1"], ["cumprod"], reverse=1, exclusive=1),
        _node("BitCast", ["x"], ["bits"], to=TensorProto.INT32),
        _node("LpNormalization", ["x"], ["l1"], p=1, axis=0),
        _node("LpNormalization", ["x"], ["l2"], p=2, axis=1),
        _node("HannWindow", ["size10"], ["hann"], periodic=0),
        _node("HammingWindow", ["size10"], ["hamming"]),
        _node("BlackmanWindow", ["size10"], ["blackman"], output_datatype=TensorProto.DOUBLE),
        _node("EyeLike", ["x"], ["eye"], dtype=TensorProto.DOUBLE, k=1),
        _node("CausalConvWithState", ["seq", "w", "bias", "state"], ["conv", "conv_state"], activation="silu"),
        _node("LinearAttention", ["q", "k", "v", "kv", "decay", "beta"], ["attn", "attn_state"], q_num_heads=2,
              kv_num_heads=1, update_rule="gated_delta"),
        _node("Resize", ["img", "", "scales"], ["resized"], mode="nearest", axes=[3, 2]),
        _node("MatMul", ["h1", "h2"], ["mm16"]),
        _node("ReduceSum", ["mm16", "sum_axes"], ["sum16"]),
        _node("Softmax", ["mm16"], ["softmax16"]),
        # Reductions over an empty axis are their identity (TIR would leave them uninitialized).
        _node("ReduceMin", ["empty", "sum_axes"], ["empty_min"]),
        _node("Cast", ["empty"], ["empty_bool"], to=TensorProto.BOOL),
        _node("ReduceMax", ["empty_bool", "sum_axes"], ["empty_any"]),
    ]
    outputs = [value("celu", [2, 5]), value("elu16", [2, 5], F16), value("swiglu", [2, 5]), value("cumprod", [2, 5]),
               value("bits", [2, 5], TensorProto.INT32), value("l1", [2, 5]), value("l2", [2, 5]),
               value("hann", [10]), value("hamming", [10]), value("blackman", [10], TensorProto.DOUBLE),
               value("eye", [2, 5], TensorProto.DOUBLE), value("conv", [1, 3, 6]), value("conv_state", [1, 3, 2]),
               value("attn", [1, 3, 8]), value("attn_state", [1, 1, 4, 4]), value("resized", [1, 1, 6, 6]),
               value("mm16", [8, 8], F16), value("sum16", [8], F16), value("softmax16", [8, 8], F16),
               value("empty_min", [2, 1, 3]), value("empty_any", [2, 1, 3], TensorProto.BOOL)]
    types = {"h1": F16, "h2": F16}
    inputs = [value(name, list(array.shape), types.get(name, F)) for name, array in feeds.items()]
    return make_model(nodes, inputs, outputs, inits, opset=28), feeds


# Per-output tolerances: float32 sums in another order (LinearAttention's state, the convolution) agree to
# ~1e-6 relative; float16 results to one ulp of 2^-11 (accumulated in float32 and rounded once, like numpy).
TOLERANCE = {"attn": 1e-5, "attn_state": 1e-5, "conv": 1e-5, "mm16": 1e-3, "sum16": 1e-3, "softmax16": 1e-3,
             "elu16": 1e-3}


def test_added_converters_match_onnx_reference(tmp_path):
    model, feeds = _model_and_feeds()
    assert unsupported_ops(model) == []
    expected = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))
    # onnx's reference LpNormalization sums x**p without abs(); the spec (and its node tests) take |x|.
    x = feeds["x"]
    expected["l1"] = x / np.abs(x).sum(axis=0, keepdims=True)
    # The reference rounds every step of a float16 softmax to float16; ours rounds once, from float32.
    logits = expected["mm16"].astype(np.float32)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    expected["softmax16"] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float16)
    artifact = tvmcompress.load(tvmcompress.compile(model, "host", output=str(tmp_path / "out")).directory)
    got = artifact.run(feeds)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        rtol = TOLERANCE.get(name, 1e-6)
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


@pytest.mark.parametrize(("node", "form"), [
    (_node("LpNormalization", ["x"], ["y"], p=3), "LpNormalization(p=3)"),
    (_node("CausalConvWithState", ["x", "x"], ["y", "state"], activation="gelu"),
     "CausalConvWithState(activation=gelu)"),
])
def test_unconvertible_forms_are_rejected_by_name(node, form):
    model = make_model([node], [value("x", [1, 2, 4])], [value(name, [1, 2, 4]) for name in node.output], opset=28)
    assert form in unsupported_ops(model)


def test_float32_matmul_and_conv_import_as_tvm_imports_them():
    # The float16 wrappers must leave float32 models (the benchmarks' ResNet / BERT layers) exactly as TVM's
    # importer makes them: same Relax, so the same schedules and speed.
    import tvm
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    from tvmcompress.frontend import import_to_relax

    rng = np.random.default_rng(1)
    inits = [helper.make_tensor("w", F, [4, 3, 3, 3], rng.standard_normal(108).tolist()),
             helper.make_tensor("m", F, [8, 5], rng.standard_normal(40).tolist()),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    nodes = [_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _node("Reshape", ["c", "shape"], ["r"]),
             _node("MatMul", ["r", "m"], ["mm"]), _node("Softmax", ["mm"], ["s"]),
             _node("ReduceSum", ["s", "axes"], ["y"])]
    inits.append(helper.make_tensor("shape", TensorProto.INT64, [2], [32, 8]))
    model = make_model(nodes, [value("x", [1, 3, 8, 8])], [value("y", [32])], inits)
    ours = import_to_relax(model)
    theirs = tvm_from_onnx(model, shape_dict={"x": [1, 3, 8, 8]}, keep_params_in_input=False)
    tvm.ir.assert_structural_equal(ours, theirs, map_free_vars=True)
