"""Converters of pre-quantized ONNX ops, each checked against onnxruntime on a small single-op model.

Default domain: QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger, DynamicQuantizeLinear (our converters,
tvmcompress/onnx_ops/quantized.py and qlinear_integer.py). com.microsoft: QGemm, QLinearAdd/Mul/Sigmoid/
LeakyRelu/Softmax/Concat/AveragePool/GlobalAveragePool (expanded to Q/DQ by onnx_ops/qlinear_contrib.py).

The ops of each domain share one model (one output per op) so that one TVM build covers them; each test reads
its output. Tolerances, in units of the output's quantization step:
- int32 outputs (MatMulInteger, ConvInteger) and DynamicQuantizeLinear: exact (integer arithmetic, or the same
  float32 formula with round half to even on both sides).
- requantized outputs: at most 1 step. Our requantization is onnx's reference (float64, round half to even);
  onnxruntime's is float32, so a product that lands within float32 rounding of a .5 tie can round the other way.
  Weights are 7-bit (|w| <= 63): onnxruntime's AVX2 u8 x s8 kernels add pairs of products in saturating int16,
  which 8-bit weights overflow (the reason for its reduce_range option); 7-bit ones do not.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from frontend_models import make_model, value
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.errors import TvmcompressError
from tvmcompress.frontend import canonicalize, import_to_relax, model_io
from tvmcompress.passes.quantize import conv_matmul_dtypes, fold_prequantized, is_prequantized

U8, I8, I32, F32 = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.FLOAT
_RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _weights(shape):
    return _RNG.integers(-63, 64, size=shape).astype(np.int8)


def _build_and_run(model, feeds):
    """(tvm outputs, onnxruntime outputs, the Relax module that was built)."""
    canonical = canonicalize(model)
    mod = import_to_relax(canonical)
    if is_prequantized(mod):
        mod, _ = fold_prequantized(mod)
    executable = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    inputs, _ = model_io(canonical)
    result = vm["main"](*[tvm.runtime.tensor(feeds[spec.name]) for spec in inputs])
    got = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    want = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    names = [o.name for o in model.graph.output]
    return ({n: g.numpy() for n, g in zip(names, got)}, dict(zip(names, want)), mod)


def _steps(got, want):
    return np.abs(got.astype(np.int64) - want.astype(np.int64)).max()


# ------------------------------------------------------------------------------------------- default domain


@pytest.fixture(scope="module")
def standard_ops():
    x_shape, a_shape = [1, 4, 7, 7], [3, 12]
    inits = [
        _init("xs", np.float32(0.02)), _init("xz", np.uint8(121)),
        _init("w", _weights((6, 4, 3, 3))), _init("ws_pc", _RNG.uniform(0.002, 0.01, 6).astype(np.float32)),
        _init("ws", np.float32(0.004)), _init("wz", np.int8(0)), _init("wz_pc", np.zeros(6, np.int8)),
        _init("ys", np.float32(0.05)), _init("yz", np.uint8(7)),
        _init("bias", _RNG.integers(-800, 800, 6).astype(np.int32)),
        _init("dw", _weights((4, 1, 3, 3))), _init("dws", np.float32(0.01)), _init("dwz", np.int8(0)),
        _init("as", np.float32(0.03)), _init("az", np.uint8(130)),
        _init("b", _weights((12, 5))), _init("bs", _RNG.uniform(0.004, 0.01, 5).astype(np.float32)),
        _init("bz", np.zeros(5, np.int8)), _init("ms", np.float32(0.08)), _init("mz", np.uint8(100)),
        _init("b8", _weights((12, 5))), _init("b8z", np.int8(3)),
        _init("a2s", np.float32(0.04)), _init("a2z", np.uint8(90)),
        _init("cw", _RNG.integers(0, 256, (3, 4, 2, 2)).astype(np.uint8)), _init("cwz", np.uint8(128)),
    ]
    nodes = [
        # per-channel weights, bias, padding, stride 2
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws_pc", "wz_pc", "ys", "yz", "bias"], ["conv_pc"],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        # per-tensor weights, SAME_UPPER, no bias
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["conv_pt"],
                         auto_pad="SAME_UPPER"),
        # depthwise
        helper.make_node("QLinearConv", ["x", "xs", "xz", "dw", "dws", "dwz", "ys", "yz"], ["conv_dw"],
                         group=4, pads=[1, 1, 1, 1]),
        helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ms", "mz"], ["qmatmul"]),
        # activation x activation, both with zero points
        helper.make_node("QLinearMatMul", ["a", "as", "az", "a2", "a2s", "a2z", "ms", "mz"], ["qmatmul_act"]),
        helper.make_node("MatMulInteger", ["a", "b8", "az", "b8z"], ["mm_int"]),
        helper.make_node("ConvInteger", ["x", "cw", "xz", "cwz"], ["conv_int"], pads=[0, 1, 0, 1]),
        helper.make_node("DynamicQuantizeLinear", ["f"], ["dq_y", "dq_scale", "dq_zp"]),
    ]
    outputs = [
        value("conv_pc", [1, 6, 4, 4], U8), value("conv_pt", [1, 6, 7, 7], U8), value("conv_dw", [1, 4, 7, 7], U8),
        value("qmatmul", [3, 5], U8), value("qmatmul_act", [3, 3], U8), value("mm_int", [3, 5], I32),
        value("conv_int", [1, 3, 6, 8], I32), value("dq_y", [2, 9], U8), value("dq_scale", [], F32),
        value("dq_zp", [], U8),
    ]
    model = make_model(
        nodes,
        [value("x", x_shape, U8), value("a", a_shape, U8), value("a2", [12, 3], U8), value("f", [2, 9])],
        outputs, inits,
    )
    feeds = {
        "x": _RNG.integers(0, 256, x_shape).astype(np.uint8),
        "a": _RNG.integers(0, 256, a_shape).astype(np.uint8),
        "a2": _RNG.integers(0, 256, (12, 3)).astype(np.uint8),
        "f": _RNG.normal(0.5, 2.0, (2, 9)).astype(np.float32),
    }
    return _build_and_run(model, feeds)


@pytest.mark.parametrize("name", ["conv_pc", "conv_pt", "conv_dw"])
def test_qlinearconv_matches_onnxruntime_within_one_step(standard_ops, name):
    got, want, _ = standard_ops
    assert got[name].dtype == np.uint8
    assert _steps(got[name], want[name]) <= 1


@pytest.mark.parametrize("name", ["qmatmul", "qmatmul_act"])
def test_qlinearmatmul_matches_onnxruntime_within_one_step(standard_ops, name):
    got, want, _ = standard_ops
    assert _steps(got[name], want[name]) <= 1


@pytest.mark.parametrize("name", ["mm_int", "conv_int"])
def test_integer_ops_are_exact(standard_ops, name):
    got, want, _ = standard_ops
    assert got[name].dtype == np.int32
    np.testing.assert_array_equal(got[name], want[name])


def test_dynamic_quantize_linear_is_exact(standard_ops):
    got, want, _ = standard_ops
    for name in ("dq_y", "dq_scale", "dq_zp"):
        np.testing.assert_array_equal(got[name], want[name])


def test_converters_feed_8bit_operands_to_int32_kernels(standard_ops):
    # Every conv2d/matmul reads the 8-bit tensors as they are and accumulates in int32, including
    # ConvInteger's uint8 weight with zero point 128 (shifted to int8 at import).
    _, _, mod = standard_ops
    kernels = conv_matmul_dtypes(mod)
    assert len(kernels) == 7
    for op, inputs, out in kernels:
        assert out == "int32" and all(d in ("int8", "uint8") for d in inputs), (op, inputs, out)


def test_dynamic_quantize_linear_of_zeros_matches_onnxruntime():
    model = make_model([helper.make_node("DynamicQuantizeLinear", ["f"], ["y", "s", "z"])], [value("f", [4])],
                       [value("y", [4], U8), value("s", [], F32), value("z", [], U8)])
    got, want, _ = _build_and_run(model, {"f": np.zeros(4, np.float32)})
    for name in ("y", "s", "z"):
        np.testing.assert_array_equal(got[name], want[name])  # scale 1, not NaN


def test_qlinearconv_1d_is_rejected_by_name():
    model = make_model(
        [helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "wz", "s", "z"], ["y"])],
        [value("x", [1, 2, 5], U8)], [value("y", [1, 2, 3], U8)],
        [_init("s", np.float32(0.1)), _init("z", np.uint8(0)), _init("w", _weights((2, 2, 3))),
         _init("wz", np.int8(0))],
    )
    with pytest.raises(TvmcompressError, match="1-D integer convolution is not supported"):
        import_to_relax(canonicalize(model))


# ------------------------------------------------------------------------------------------- com.microsoft


@pytest.fixture(scope="module")
def contrib_ops():
    shape = [1, 4, 6, 6]
    q = [("s1", 0.03, "z1", 128), ("s2", 0.02, "z2", 100), ("so", 0.04, "zo", 120), ("sp", 1 / 256, "zp", 0)]
    inits = [i for s, sv, z, zv in q for i in (_init(s, np.float32(sv)), _init(z, np.uint8(zv)))]
    inits += [
        _init("gw", _weights((5, 4))), _init("gws", _RNG.uniform(0.004, 0.01, 5).astype(np.float32)),
        _init("gwz", np.zeros(5, np.int8)), _init("gc", _RNG.integers(-500, 500, 5).astype(np.int32)),
        _init("gw2", _weights((4, 5))),
    ]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("QLinearAdd", ["x", "s1", "z1", "y", "s2", "z2", "so", "zo"], ["add"], domain=ms),
        helper.make_node("QLinearMul", ["x", "s1", "z1", "y", "s2", "z2", "so", "zo"], ["mul"], domain=ms),
        helper.make_node("QLinearSigmoid", ["x", "s1", "z1", "sp", "zp"], ["sigmoid"], domain=ms),
        helper.make_node("QLinearLeakyRelu", ["x", "s1", "z1", "so", "zo"], ["leaky"], alpha=0.1, domain=ms),
        helper.make_node("QLinearSoftmax", ["x", "s1", "z1", "sp", "zp"], ["softmax"], axis=-1, opset=13, domain=ms),
        helper.make_node("QLinearConcat", ["so", "zo", "x", "s1", "z1", "y", "s2", "z2"], ["concat"], axis=1,
                         domain=ms),
        helper.make_node("QLinearAveragePool", ["x", "s1", "z1", "so", "zo"], ["avgpool"], kernel_shape=[2, 2],
                         strides=[2, 2], domain=ms),
        helper.make_node("QLinearGlobalAveragePool", ["x", "s1", "z1", "so", "zo"], ["gap"], domain=ms),
        helper.make_node("QGemm", ["m", "s1", "z1", "gw", "gws", "gwz", "gc", "so", "zo"], ["qgemm"], transB=1,
                         domain=ms),
        # B not transposed, alpha != 1, float output
        helper.make_node("QGemm", ["m", "s1", "z1", "gw2", "gws", "gwz", "gc"], ["qgemm_float"], alpha=0.5,
                         domain=ms),
    ]
    outputs = [
        value("add", shape, U8), value("mul", shape, U8), value("sigmoid", shape, U8), value("leaky", shape, U8),
        value("softmax", shape, U8), value("concat", [1, 8, 6, 6], U8), value("avgpool", [1, 4, 3, 3], U8),
        value("gap", [1, 4, 1, 1], U8), value("qgemm", [3, 5], U8), value("qgemm_float", [3, 5], F32),
    ]
    model = make_model(nodes, [value("x", shape, U8), value("y", shape, U8), value("m", [3, 4], U8)], outputs, inits,
                       extra_opsets=[(ms, 1)])
    feeds = {
        "x": _RNG.integers(0, 256, shape).astype(np.uint8),
        "y": _RNG.integers(0, 256, shape).astype(np.uint8),
        "m": _RNG.integers(0, 256, (3, 4)).astype(np.uint8),
    }
    return _build_and_run(model, feeds)


@pytest.mark.parametrize("name", ["add", "mul", "sigmoid", "leaky", "softmax", "concat", "avgpool", "gap", "qgemm"])
def test_contrib_qlinear_op_matches_onnxruntime_within_one_step(contrib_ops, name):
    got, want, _ = contrib_ops
    assert got[name].dtype == want[name].dtype == np.uint8
    assert _steps(got[name], want[name]) <= 1


def test_qgemm_with_float_output_matches_onnxruntime(contrib_ops):
    got, want, _ = contrib_ops
    # Float output: exact int32 accumulation on both sides, then one float32 rescale each (a few ulps).
    np.testing.assert_allclose(got["qgemm_float"], want["qgemm_float"], rtol=1e-5, atol=1e-6)


def test_qgemm_computes_in_integers(contrib_ops):
    _, _, mod = contrib_ops
    kernels = conv_matmul_dtypes(mod)
    assert [k for k in kernels if k[0] == "relax.matmul"] == [("relax.matmul", ("uint8", "int8"), "int32")] * 2


def test_channels_last_contrib_pool_is_rejected_by_name():
    model = make_model(
        [helper.make_node("QLinearGlobalAveragePool", ["x", "s", "z", "s", "z"], ["y"], channels_last=1,
                          domain="com.microsoft")],
        [value("x", [1, 4, 4, 3], U8)], [value("y", [1, 1, 1, 3], U8)],
        [_init("s", np.float32(0.1)), _init("z", np.uint8(0))], extra_opsets=[("com.microsoft", 1)],
    )
    with pytest.raises(TvmcompressError, match=r"QLinearGlobalAveragePool\(channels_last=1\) is not supported"):
        canonicalize(model)
