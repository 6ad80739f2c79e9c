"""Cast to and from float8 (tvmcompress.onnx_ops.float8), compiled for the host and compared with onnx's
reference evaluator bit for bit: every float8 value, every midpoint between neighbours (ties round to even),
values just off the midpoints, subnormals, overflow, infinities, NaN and -0, with saturate on and off."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from frontend_models import make_model, value
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import tvmcompress

TYPES = {"FLOAT8E4M3FN": ml_dtypes.float8_e4m3fn, "FLOAT8E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
         "FLOAT8E5M2": ml_dtypes.float8_e5m2, "FLOAT8E5M2FNUZ": ml_dtypes.float8_e5m2fnuz}


def _probe_values() -> np.ndarray:
    values = set()
    for np_type in TYPES.values():
        finite = np.arange(256, dtype=np.uint8).view(np_type).astype(np.float64)
        finite = np.unique(finite[np.isfinite(finite)])
        mids = (finite[1:] + finite[:-1]) / 2
        values.update(finite.tolist() + mids.tolist() + (mids * (1 + 1e-6)).tolist() + (mids * (1 - 1e-6)).tolist())
    values.update([np.inf, -np.inf, 1e9, -1e9, 3e38, 1e-30, -1e-30, 1e-45])
    probe = np.array(sorted(values), dtype=np.float32)
    return np.concatenate([probe, -probe, np.array([np.nan, -0.0, 0.0], np.float32)])


def _bits_equal(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    # NaN has several encodings (e5m2: 0x7E or 0x7F); every other value has exactly one.
    both_nan = np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32))
    return both_nan | (got.view(np.uint8) == want.view(np.uint8))


def _compile(model, tmp_path):
    return tvmcompress.load(tvmcompress.compile(model, "host", output=str(tmp_path / "out")).directory)


def test_cast_float_to_float8_matches_onnx_reference_bit_for_bit(tmp_path):
    x = _probe_values()
    nodes, outputs = [], []
    for name in TYPES:
        for saturate in (1, 0):
            out = f"{name}_sat{saturate}"
            nodes.append(helper.make_node("Cast", ["x"], [out], to=getattr(TensorProto, name), saturate=saturate))
            outputs.append(value(out, [x.size], getattr(TensorProto, name)))
    model = make_model(nodes, [value("x", [x.size])], outputs, opset=21)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = _compile(model, tmp_path).run({"x": x})
    for info, reference in zip(outputs, want):
        same = _bits_equal(got[info.name], reference)
        assert same.all(), f"{info.name}: {x[~same][:5]} -> {got[info.name][~same][:5]}, want {reference[~same][:5]}"


def test_cast_float8_to_float_decodes_every_byte(tmp_path):
    inputs = {name: np.arange(256, dtype=np.uint8).view(np_type) for name, np_type in TYPES.items()}
    targets = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}
    nodes = [helper.make_node("Cast", [name], [f"{name}_{suffix}"], to=to)
             for name in TYPES for suffix, to in targets.items()]
    outputs = [value(f"{name}_{suffix}", [256], to) for name in TYPES for suffix, to in targets.items()]
    model = make_model(nodes, [value(name, [256], getattr(TensorProto, name)) for name in TYPES], outputs, opset=21)
    want = ReferenceEvaluator(model).run(None, inputs)
    got = _compile(model, tmp_path).run(inputs)
    for info, reference in zip(outputs, want):
        np.testing.assert_array_equal(got[info.name], reference)  # exact: every float8 value is a float16


def test_other_ops_on_float8_stay_rejected():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", [4], TensorProto.FLOAT8E4M3FN)],
                       [value("y", [4], TensorProto.FLOAT8E4M3FN)], opset=21)
    assert tvmcompress.frontend.unsupported_ops(model) == ["Relu(FLOAT8E4M3FN)"]


def test_quantize_and_dequantize_linear_on_float8_match_onnx_reference(tmp_path):
    # QuantizeLinear to float8 is x / scale cast with the type's saturation rule (saturate on and off);
    # DequantizeLinear reads every byte. Per-axis scales on a [2, N] x.
    x = np.stack([_probe_values(), _probe_values()[::-1]])
    scale = numpy_helper.from_array(np.array([0.5, 4.0], np.float32), "scale")
    nodes, outputs, initializers = [], [], [scale]
    codes = {name: np.stack([np.arange(256, dtype=np.uint8).view(t)] * 2) for name, t in TYPES.items()}
    for name, np_type in TYPES.items():
        elem_type = getattr(TensorProto, name)
        initializers.append(numpy_helper.from_array(np.zeros(2, np_type), f"zero_{name}"))
        for saturate in (1, 0):
            out = f"q_{name}_sat{saturate}"
            nodes.append(helper.make_node("QuantizeLinear", ["x", "scale", f"zero_{name}"], [out], axis=0,
                                          saturate=saturate))
            outputs.append(value(out, list(x.shape), elem_type))
        nodes.append(helper.make_node("DequantizeLinear", [name, "scale"], [f"dq_{name}"], axis=0))
        outputs.append(value(f"dq_{name}", [2, 256]))
    inputs = [value("x", list(x.shape))] + [value(name, [2, 256], getattr(TensorProto, name)) for name in TYPES]
    model = make_model(nodes, inputs, outputs, initializers, opset=21)
    feeds = {"x": x, **codes}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = _compile(model, tmp_path).run(feeds)
    for info, reference in zip(outputs, want):
        if info.name.startswith("q_"):
            same = _bits_equal(got[info.name], reference)
            wrong = f"{x[~same][:5]} -> {got[info.name][~same][:5]}, want {reference[~same][:5]}"
            assert same.all(), f"{info.name}: {wrong}"
        else:
            np.testing.assert_array_equal(got[info.name], reference)
