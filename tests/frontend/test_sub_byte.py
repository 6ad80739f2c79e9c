"""Sub-byte element types (int4, uint4, int2, uint2, float4e2m1: tvmcompress.onnx_ops.sub_byte, quantize_linear,
tvmcompress.sub_byte_io), compiled for the host and compared with onnx's reference evaluator exactly: casts of
every value of each type, ties, fractions, out-of-range values, -0, inf and NaN; Quantize/DequantizeLinear per
axis and blocked; and the artifact boundary (manifest, Artifact.run dtypes, .npz-style carrier inputs)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import tvmcompress
from tvmcompress.errors import TvmcompressError
from tvmcompress.onnx_ops import sub_byte

TYPES = {"INT4": ml_dtypes.int4, "UINT4": ml_dtypes.uint4, "INT2": ml_dtypes.int2, "UINT2": ml_dtypes.uint2,
         "FLOAT4E2M1": ml_dtypes.float4_e2m1fn}
OPSET = 25  # Cast-25 takes all five types


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def _value(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def _compile(model, tmp_path):
    return tvmcompress.compile(model, "host", output=str(tmp_path / "out"))


def _assert_same(got: np.ndarray, want: np.ndarray, what: str):
    """Same dtype and the same values; float4 also the same sign of zero (the bits of the one-byte types)."""
    assert got.dtype == want.dtype, f"{what}: {got.dtype} != {want.dtype}"
    if got.dtype.itemsize == 1 and got.dtype.kind == "V":  # ml_dtypes' one-value-per-byte types
        same = got.view(np.uint8) == want.view(np.uint8)
    else:
        same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{what}: got {got[~same][:6]}, want {want[~same][:6]}"


INTEGER_BITS = {"int4": (4, True), "uint4": (4, False), "int2": (2, True), "uint2": (2, False)}


def _assert_float_cast(got: np.ndarray, want: np.ndarray, source: np.ndarray, what: str):
    """A float -> sub-byte integer Cast: in range, onnx's reference; out of range, where ONNX leaves the result
    undefined (and onnx's reference changed with ml_dtypes 0.7, from the low bits to 0), our documented rule:
    truncate toward zero, keep the low bits (two's complement), as the integer -> integer casts do."""
    bits, signed = INTEGER_BITS[got.dtype.name]
    whole = np.trunc(source.astype(np.float64))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    inside = (whole >= low) & (whole <= high)
    _assert_same(got[inside], want[inside], what)
    wrapped = whole[~inside].astype(np.int64) & ((1 << bits) - 1)
    if signed:
        wrapped = np.where(wrapped > high, wrapped - (1 << bits), wrapped)
    np.testing.assert_array_equal(got[~inside].astype(np.int64), wrapped, err_msg=f"{what}: out of range")


def test_cast_float_to_sub_byte_matches_onnx_reference(tmp_path):
    # Integer targets: ONNX leaves a float out of the type's range undefined; we truncate toward zero and keep the
    # low bits (_assert_float_cast). NaN and inf are left out there (undefined: C casts them to
    # INT_MIN). float4e2m1: every value, every midpoint (ties to even), just off them, saturation, inf, NaN, -0.
    integers = np.array([-100.7, -17.5, -9.9, -8.5, -8, -7.5, -2.5, -1.5, -0.7, -0.0, 0.3, 0.5, 0.9, 1.5, 2.5, 3,
                         7.9, 8, 15.5, 16, 31, 1000.25], np.float32)
    fp4 = np.unique(np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64))
    mids = (fp4[1:] + fp4[:-1]) / 2
    floats = np.concatenate([fp4, mids, mids * (1 + 1e-6), mids * (1 - 1e-6), [7, 100, 1e30, np.inf, 1e-45]])
    floats = np.concatenate([floats, -floats, [np.nan, -0.0]]).astype(np.float32)
    nodes = [helper.make_node("Cast", ["i" if name != "FLOAT4E2M1" else "f"], [name.lower()],
                              to=getattr(TensorProto, name)) for name in TYPES]
    nodes.append(helper.make_node("Cast", ["h"], ["int4_from_f16"], to=TensorProto.INT4))
    outputs = [_value(name.lower(), [(integers if name != "FLOAT4E2M1" else floats).size], getattr(TensorProto, name))
               for name in TYPES] + [_value("int4_from_f16", [integers.size], TensorProto.INT4)]
    model = _model(nodes, [_value("i", [integers.size]), _value("f", [floats.size]),
                           _value("h", [integers.size], TensorProto.FLOAT16)], outputs)
    feeds = {"i": integers, "f": floats, "h": integers.astype(np.float16)}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = _compile(model, tmp_path).run(feeds)
    for info, reference in zip(outputs, want):
        if info.name in INTEGER_BITS or info.name == "int4_from_f16":
            _assert_float_cast(got[info.name], reference, integers, info.name)
        else:
            _assert_same(got[info.name], reference, info.name)


def test_cast_between_integer_and_sub_byte_types(tmp_path):
    # Integer to sub-byte keeps the low bits (ONNX: two's complement); sub-byte to int8 / float keeps the value.
    x = np.array([-128, -9, -8, -3, -2, -1, 0, 1, 2, 3, 7, 8, 9, 15, 16, 127], np.int8)
    nodes = [helper.make_node("Cast", ["x"], [name.lower()], to=getattr(TensorProto, name)) for name in TYPES]
    nodes += [helper.make_node("Cast", [name.lower()], [f"{name.lower()}_f32"], to=TensorProto.FLOAT) for name in TYPES]
    nodes.append(helper.make_node("Cast", ["int4"], ["int4_i8"], to=TensorProto.INT8))
    nodes.append(helper.make_node("Cast", ["uint2"], ["uint2_f16"], to=TensorProto.FLOAT16))
    outputs = ([_value(name.lower(), [x.size], getattr(TensorProto, name)) for name in TYPES]
               + [_value(f"{name.lower()}_f32", [x.size]) for name in TYPES]
               + [_value("int4_i8", [x.size], TensorProto.INT8), _value("uint2_f16", [x.size], TensorProto.FLOAT16)])
    model = _model(nodes, [_value("x", [x.size], TensorProto.INT8)], outputs)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = _compile(model, tmp_path).run({"x": x})
    for info, reference in zip(outputs, want):
        _assert_same(got[info.name], reference, info.name)


def test_sub_byte_graph_inputs_and_castlike(tmp_path):
    # Every value of each type as a graph input, read by Cast and CastLike; CastLike to a sub-byte `like` given as
    # an initializer (the runner's attribute-like binding) becomes Cast(to=type) at import.
    inputs = {name.lower(): np.arange(256, dtype=np.uint8).view(t)[: 1 << (2 if "2" in name else 4)]
              for name, t in TYPES.items()}
    like = numpy_helper.from_array(np.zeros(0, ml_dtypes.int4), "like")
    nodes = [helper.make_node("Cast", [name], [f"{name}_f32"], to=TensorProto.FLOAT) for name in inputs]
    # (onnx's reference fails on CastLike from uint4 itself: the input here is uint4's values as float32.)
    nodes.append(helper.make_node("CastLike", ["uint4_f32", "like"], ["uint4_as_int4"]))
    outputs = [_value(f"{name}_f32", [a.size]) for name, a in inputs.items()]
    outputs.append(_value("uint4_as_int4", [16], TensorProto.INT4))
    model = _model(nodes, [_value(name, [a.size], getattr(TensorProto, name.upper())) for name, a in inputs.items()],
                   outputs, [like])
    want = ReferenceEvaluator(model).run(None, inputs)
    got = _compile(model, tmp_path).run(inputs)
    for info, reference in zip(outputs, want):
        if info.name == "uint4_as_int4":  # uint4's 8..15 are out of int4's range
            _assert_float_cast(got[info.name], reference, inputs["uint4"].astype(np.float32), info.name)
        else:
            _assert_same(got[info.name], reference, info.name)


@pytest.mark.parametrize("elem_type", ["INT4", "UINT4", "INT2", "FLOAT4E2M1"])
def test_quantize_dequantize_per_axis_and_blocked(elem_type, tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6)) * 6).astype(np.float32)
    x[0, :3] = [0.5, 1.5, -2.5]  # ties
    np_type = TYPES[elem_type]
    onnx_type = getattr(TensorProto, elem_type)
    zero = np.zeros(4, np_type) if elem_type == "FLOAT4E2M1" else np.array([0, 1, -1, 1], np.int8).astype(np_type)
    block_zero = np.zeros((4, 2), np_type) if elem_type == "FLOAT4E2M1" else np.ones((4, 2), np_type)
    initializers = [numpy_helper.from_array(np.array([0.5, 1.0, 2.0, 0.25], np.float32), "scale"),
                    numpy_helper.from_array(zero, "zero"),
                    numpy_helper.from_array(np.array([[0.5, 1.5]] * 4, np.float32), "block_scale"),
                    numpy_helper.from_array(block_zero, "block_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=0),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], axis=0),
             helper.make_node("QuantizeLinear", ["x", "block_scale", "block_zero"], ["qb"], axis=1, block_size=4),
             helper.make_node("DequantizeLinear", ["qb", "block_scale", "block_zero"], ["dqb"], axis=1, block_size=4)]
    outputs = [_value("q", [4, 6], onnx_type), _value("dq", [4, 6]), _value("qb", [4, 6], onnx_type),
               _value("dqb", [4, 6])]
    model = _model(nodes, [_value("x", [4, 6])], outputs, initializers)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = _compile(model, tmp_path).run({"x": x})
    for info, reference in zip(outputs, want):
        _assert_same(got[info.name], reference, info.name)


def test_artifact_records_library_dtype_and_takes_npz_style_inputs(tmp_path):
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT4)],
                   [_value("x", [3], TensorProto.UINT4)], [_value("y", [3], TensorProto.INT4)])
    artifact = _compile(model, tmp_path)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "x", "shape": [3], "dtype": "uint4", "library_dtype": "uint8"}]
    assert manifest["outputs"] == [{"name": "y", "shape": [3], "dtype": "int4", "library_dtype": "int8"}]
    got = artifact.run({"x": np.array([1, 8, 15], ml_dtypes.uint4)})["y"]
    assert got.dtype == np.dtype(ml_dtypes.int4) and got.tolist() == [1, -8, -1]
    # .npz files cannot hold uint4: the carrier (uint8) with uint4 values is taken too, and checked.
    stacked = artifact.run_batches({"x": np.array([1, 8, 15, 0, 2, 3], np.uint8)})["y"]  # two calls, on axis 0
    assert stacked.dtype == np.dtype(ml_dtypes.int4) and stacked.tolist() == [1, -8, -1, 0, 2, 3]
    with pytest.raises(TvmcompressError, match="input 'x' is given as uint8 for a uint4 input, but holds values"):
        artifact.run({"x": np.array([1, 16, 3], np.uint8)})


def test_lower_model_carries_sub_byte_types_in_wider_ones():
    like = numpy_helper.from_array(np.zeros(0, ml_dtypes.int4), "like")
    zero = numpy_helper.from_array(np.array([1, -2], ml_dtypes.int4), "zero")
    model = _model([helper.make_node("CastLike", ["x", "like"], ["c"], saturate=1),
                    helper.make_node("QuantizeLinear", ["x", "s", "zero"], ["q"], axis=0)],
                   [_value("x", [2]), _value("s", [2])],
                   [_value("c", [2], TensorProto.INT4), _value("q", [2], TensorProto.INT4)], [like, zero])
    sub_byte.lower_model(model, [model.graph])
    cast, quantize = model.graph.node
    assert (cast.op_type, list(cast.input)) == ("Cast", ["x"])
    assert {a.name: a.i for a in cast.attribute} == {"to": TensorProto.INT4, "saturate": 1}
    assert {a.name: a.i for a in quantize.attribute}[sub_byte.ELEM_TYPE_ATTRIBUTE] == TensorProto.INT4
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.INT8, TensorProto.INT8]
    lowered = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert lowered["zero"].dtype == np.int8 and lowered["zero"].tolist() == [1, -2]


def test_other_ops_on_sub_byte_types_stay_rejected():
    model = _model([helper.make_node("Neg", ["x"], ["y"])], [_value("x", [4], TensorProto.INT4)],
                   [_value("y", [4], TensorProto.INT4)])
    assert tvmcompress.frontend.unsupported_ops(model) == ["Neg(INT4)"]


def test_cast_to_and_from_float8e8m0_every_rounding_mode(tmp_path):
    # float8e8m0 is not sub-byte, but TVM 0.27 cannot convert it either: carried as float32 the same way.
    # Powers of two, just above and below them, the midpoint rule of "nearest", the ends of the range (2^-127,
    # 2^127, float32 subnormals), 0, inf and NaN; saturate on and off.
    powers = 2.0 ** np.arange(-127, 128, dtype=np.float64)
    x = np.concatenate([powers, powers * 1.5, powers * 1.4999, powers * 1.5001, powers * (1 - 2 ** -20),
                        [0.0, 1e-45, 3.4e38, np.inf, np.nan]]).astype(np.float32)
    nodes, outputs = [], []
    for mode in ("up", "down", "nearest"):
        for saturate in (1, 0):
            out = f"{mode}_sat{saturate}"
            nodes.append(helper.make_node("Cast", ["x"], [out], to=TensorProto.FLOAT8E8M0, round_mode=mode,
                                          saturate=saturate))
            outputs.append(_value(out, [x.size], TensorProto.FLOAT8E8M0))
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu)
    nodes.append(helper.make_node("Cast", ["e"], ["e_f32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Cast", ["e"], ["e_f16"], to=TensorProto.FLOAT16))
    outputs += [_value("e_f32", [256]), _value("e_f16", [256], TensorProto.FLOAT16)]
    model = _model(nodes, [_value("x", [x.size]), _value("e", [256], TensorProto.FLOAT8E8M0)], outputs)
    feeds = {"x": x, "e": codes}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = _compile(model, tmp_path).run(feeds)
    for info, reference in zip(outputs, want):
        _assert_same(got[info.name], reference, info.name)
