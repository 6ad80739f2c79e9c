"""NaN follows ONNX: PropagateNaN (schedules/propagate_nan.py) and the rejection of non-finite weights at import.

onnxruntime 1.x propagates NaN through Relu, Clip, Max, Min and Conv; the compiled model must put NaN in exactly
the same output positions (np.isnan equal) and agree elsewhere within 1e-5 (float32 reassociation in the conv).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm.script import tirx as T

import zoo
from tvmcompress import CompileOptions, compile as tvmc_compile
from tvmcompress.errors import TvmcompressError
from tvmcompress.schedules.propagate_nan import PropagateNaN, propagate_nan


# --- the pass ------------------------------------------------------------------------------------------------


@T.prim_func(private=True, s_tir=True)
def _before(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32"), c: T.Buffer((8,), "float32"),
            d: T.Buffer((8,), "float32"), k: T.Buffer((8,), "int32")):
    for i in range(8):
        with T.sblock("e"):
            vi = T.axis.spatial(8, i)
            c[vi] = T.max(a[vi], b[vi])
            d[vi] = T.min(T.max(T.float32(0), a[vi] * b[vi]), T.float32(6))
            k[vi] = T.max(k[vi], 0)


@T.prim_func(private=True, s_tir=True)
def _expected(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32"), c: T.Buffer((8,), "float32"),
              d: T.Buffer((8,), "float32"), k: T.Buffer((8,), "int32")):
    for i in range(8):
        with T.sblock("e"):
            vi = T.axis.spatial(8, i)
            T.reads(a[vi], b[vi], k[vi])
            T.writes(c[vi], d[vi], k[vi])
            # Two varying operands: a NaN first operand wins; a NaN second one fails the compare and is returned.
            c[vi] = T.Select(T.isnan(a[vi]), a[vi], T.Select(a[vi] > b[vi], a[vi], b[vi]))
            # Clip: the constant moves second, the compare is false for NaN; small computed operands are repeated
            # (LLVM computes them once; a Let in a vectorized loop can be refused, fuzz seed 536).
            d[vi] = T.Select(T.Select(a[vi] * b[vi] < T.float32(0), T.float32(0), a[vi] * b[vi]) > T.float32(6),
                             T.float32(6), T.Select(a[vi] * b[vi] < T.float32(0), T.float32(0), a[vi] * b[vi]))
            k[vi] = T.max(k[vi], 0)  # integers have no NaN: untouched


def test_propagate_nan_rewrites_float_max_min():
    tvm.ir.assert_structural_equal(propagate_nan(_before), _expected)


def test_propagate_nan_binds_deep_operands_once():
    """A long chain of clips (more Selects than _INLINE_SELECTS) binds its operand with a Let: linear size."""
    from tvmcompress.schedules import propagate_nan as module

    x = tvm.tirx.Var("x", "float32")
    expr = x * x
    for _ in range(12):
        expr = tvm.tirx.Min(tvm.tirx.Max(expr, tvm.tirx.const(0.0, "float32")), tvm.tirx.const(6.0, "float32"))
    func = tvm.tirx.PrimFunc([x], tvm.tirx.Evaluate(expr))
    text = propagate_nan(func).script()
    assert "T.Let" in text and "T.max" not in text and "T.min" not in text
    assert module._selects(propagate_nan(func).body.value) < 1000  # repeated at every level: 2**24


def test_propagate_nan_is_idempotent():
    once = propagate_nan(_before)
    tvm.ir.assert_structural_equal(propagate_nan(once), once)


def test_propagate_nan_leaves_a_module_without_float_max_min_alone():
    @T.prim_func(private=True, s_tir=True)
    def ints(k: T.Buffer((8,), "int32"), y: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("e"):
                vi = T.axis.spatial(8, i)
                k[vi] = T.min(T.max(k[vi], 0), 6)
                y[vi] = y[vi] + T.float32(1)

    mod = tvm.IRModule({"ints": ints})
    assert PropagateNaN()(mod).same_as(mod)


def test_propagate_nan_with_a_nan_constant_keeps_the_isnan_form():
    # max(x, NaN) must be NaN for every x: the constant is NaN itself, so the compare-with-constant form
    # (which would return x) must not be used.
    @T.prim_func(private=True, s_tir=True)
    def f(a: T.Buffer((4,), "float32"), c: T.Buffer((4,), "float32")):
        for i in range(4):
            with T.sblock("e"):
                vi = T.axis.spatial(4, i)
                c[vi] = T.max(a[vi], T.float32("nan"))

    out = _run_prim_func(propagate_nan(f), np.array([1, -1, np.nan, 0], np.float32))
    assert np.isnan(out).all()


def _run_prim_func(func, a: np.ndarray) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("private", False)}),
                      target="llvm")
    c = tvm.runtime.tensor(np.zeros_like(a))
    lib["main"](tvm.runtime.tensor(a), c)
    return c.numpy()


def test_propagate_nan_numbers_match_numpy():
    a = np.array([np.nan, -1, 0.5, 7, np.inf, -np.inf, np.nan, 2], np.float32)
    b = np.array([1, np.nan, 0.25, 1, 0, 0, np.nan, 3], np.float32)
    lib = tvm.compile(tvm.IRModule({"main": propagate_nan(_before).with_attr("global_symbol", "main")}), target="llvm")
    c, d, k = (tvm.runtime.tensor(np.zeros(8, dtype)) for dtype in ("float32", "float32", "int32"))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), c, d, k)
    np.testing.assert_array_equal(c.numpy(), np.maximum(a, b))  # assert_array_equal: NaN == NaN
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(d.numpy(), np.clip(a * b, 0, 6))


# --- whole models against onnxruntime ----------------------------------------------------------------------------


def _nan_ops_model() -> onnx.ModelProto:
    """Relu, Clip, Max, Min of two inputs, and a 1x1 and a strided 3x3 Conv + Relu (direct convolutions; the
    Winograd form is test_winograd_conv_keeps_every_nan_of_onnxruntime)."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        helper.make_node("Max", ["x", "y"], ["max"]),
        helper.make_node("Min", ["y", "x"], ["min"]),
        helper.make_node("Conv", ["img", "w1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["conv1x1_relu"]),
        helper.make_node("Conv", ["img", "w3", "b3"], ["c3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["conv3x3_relu"]),
    ]
    inits = [
        numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi"),
        numpy_helper.from_array(rng.normal(size=(8, 4, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b3"),
    ]
    graph = helper.make_graph(
        nodes, "nan_ops",
        [v("x", TensorProto.FLOAT, [2, 32]), v("y", TensorProto.FLOAT, [2, 32]), v("img", TensorProto.FLOAT, [1, 4, 8, 8])],
        [v("relu", TensorProto.FLOAT, [2, 32]), v("clip", TensorProto.FLOAT, [2, 32]),
         v("max", TensorProto.FLOAT, [2, 32]), v("min", TensorProto.FLOAT, [2, 32]),
         v("conv1x1_relu", TensorProto.FLOAT, [1, 8, 8, 8]), v("conv3x3_relu", TensorProto.FLOAT, [1, 8, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _nan_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 32)).astype(np.float32) * 8
    y = rng.normal(size=(2, 32)).astype(np.float32) * 8
    x[:, ::5], y[:, ::7] = np.nan, np.nan
    x[0, 1], x[0, 2], y[1, 3] = np.inf, -np.inf, -np.inf
    img = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    img[0, 1, 3, 3] = img[0, 0, 6, 1] = np.nan
    return {"x": x, "y": y, "img": img}


def _assert_same_nans(got: dict[str, np.ndarray], model: onnx.ModelProto, feeds, names) -> None:
    for name, want in zip(names, zoo.ort_outputs(model, feeds)):
        assert np.isnan(want).any(), f"{name}: the case must exercise NaN"
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want), err_msg=name)
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=name)


def test_relu_clip_max_min_conv_put_nan_where_onnxruntime_does(tmp_path):
    model = _nan_ops_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    artifact = tvmc_compile(tmp_path / "m.onnx", output=tmp_path / "out")
    feeds = _nan_feeds()
    _assert_same_nans(artifact.run(feeds), model, feeds, [o.name for o in model.graph.output])


def test_winograd_conv_keeps_every_nan_of_onnxruntime(tmp_path):
    """A 3x3 stride-1 conv runs as Winograd F(4x4): its input transform mixes a whole tile, so one NaN pixel makes
    its whole output tiles NaN, more positions than a direct conv (onnxruntime). No NaN is lost; --no-winograd
    gives onnxruntime's exact positions."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "conv3x3",
        [v("x", TensorProto.FLOAT, [1, 64, 28, 28])], [v("y", TensorProto.FLOAT, [1, 64, 28, 28])],
        [numpy_helper.from_array(rng.normal(size=(64, 64, 3, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = rng.normal(size=(1, 64, 28, 28)).astype(np.float32)
    x[0, 3, 5, 5] = np.nan
    want = np.isnan(zoo.ort_outputs(model, {"x": x})[0])
    winograd = np.isnan(tvmc_compile(model, output=tmp_path / "w").run({"x": x})["y"])
    direct = np.isnan(tvmc_compile(model, output=tmp_path / "d",
                                   options=CompileOptions.create(winograd=False)).run({"x": x})["y"])
    assert want.sum() == 64 * 9 and (winograd >= want).all() and winograd.sum() > want.sum()
    np.testing.assert_array_equal(direct, want)


# --- non-finite weights ----------------------------------------------------------------------------------------


def _cnn_with_weight(value: float, tmp_path) -> tuple[onnx.ModelProto, str]:
    """zoo.cnn with `value` in one element of its first conv weight; (model, that weight's name)."""
    model = zoo.cnn()
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    init = next(t for t in model.graph.initializer if t.name == first_conv.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight.reshape(-1)[3] = value
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(model, str(tmp_path / "m.onnx"))
    return model, init.name


def test_cli_rejects_a_nan_weight_by_name_in_one_line(tmp_path):
    _, name = _cnn_with_weight(np.nan, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tvmcompress.cli", "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"weight '{name}' holds NaN (1 of 216 values are not finite)" in lines[0]
    assert "--allow-nonfinite-weights" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_weight_is_rejected_by_name(value, tmp_path):
    _, name = _cnn_with_weight(value, tmp_path)
    with pytest.raises(TvmcompressError, match=f"weight '{name}' holds Inf"):
        tvmc_compile(tmp_path / "m.onnx", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_allow_nonfinite_weights_compiles_and_gives_nan_like_onnxruntime(tmp_path):
    """The issue's case: NaN in the first conv weight; onnxruntime's logits are NaN, so must ours be."""
    model, _ = _cnn_with_weight(np.nan, tmp_path)
    with pytest.raises(TvmcompressError, match="allow_nonfinite_weights"):
        tvmc_compile(tmp_path / "m.onnx", output=tmp_path / "refused")
    artifact = tvmc_compile(tmp_path / "m.onnx", output=tmp_path / "out",
                            options=CompileOptions.create(allow_nonfinite_weights=True))
    feeds = zoo.random_inputs(model, {})
    _assert_same_nans(artifact.run(feeds), model, feeds, [spec.name for spec in artifact.outputs])


def _masked_softmax(mask_fill: float) -> onnx.ModelProto:
    """Softmax(x + mask), the mask a constant upper triangle of `mask_fill`: how causal masks reach us after
    constant folding (torch's SDPA export fills with -inf)."""
    mask = np.triu(np.full((4, 4), mask_fill, np.float32), k=1)
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["scores"]), helper.make_node("Softmax", ["scores"], ["p"], axis=-1)],
        "masked", [v("x", TensorProto.FLOAT, [1, 4, 4])], [v("p", TensorProto.FLOAT, [1, 4, 4])],
        [numpy_helper.from_array(mask, "mask")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_an_infinite_mask_constant_is_not_a_weight_and_compiles(tmp_path):
    model = _masked_softmax(-np.inf)
    x = np.random.default_rng(0).standard_normal((1, 4, 4)).astype(np.float32)
    got = tvmc_compile(model, output=tmp_path / "out").run({"x": x})["p"]
    np.testing.assert_allclose(got, zoo.ort_outputs(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert got[0, 0, 1] == 0 and got[0, 0, 0] == 1  # exp(-inf) = 0: the masked entries hold no weight


def test_a_nan_constant_is_rejected_even_when_it_is_not_a_weight(tmp_path):
    with pytest.raises(TvmcompressError, match=r"constant 'mask' holds NaN \(6 of 16 values"):
        tvmc_compile(_masked_softmax(np.nan), output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
