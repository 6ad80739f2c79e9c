"""const_inputs given as NumPy values (issue 17: `CompileOptions.create(const_inputs={...: np.array(...)})` built
the whole library, then failed writing the manifest, since json cannot write NumPy arrays)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from frontend_models import make_model, value
from onnx import helper

import tvmcompress
from tvmcompress.config import CompileOptions
from tvmcompress.errors import TvmcompressError


def scale_bias_model():
    return make_model(
        [helper.make_node("Mul", ["x", "scale"], ["mul"]), helper.make_node("Add", ["mul", "bias"], ["y"])],
        [value("x", [2, 4]), value("scale", []), value("bias", [2, 4])],
        [value("y", [2, 4])],
        opset=15,
    )


def test_numpy_const_inputs_are_plain_json_values():
    options = CompileOptions.create(const_inputs={
        "bias": np.arange(8, dtype=np.float32).reshape(2, 4) / 8, "scale": np.float32(0.5),
        "flag": np.array(True), "k": np.int64(3), "axes": [np.int64(0), 1],
    })
    consts = json.loads(json.dumps(options.to_json()))["const_inputs"]
    assert consts == {"axes": [0, 1], "bias": [[0.0, 0.125, 0.25, 0.375], [0.5, 0.625, 0.75, 0.875]],
                      "flag": True, "k": 3, "scale": 0.5}
    assert type(consts["k"]) is int and type(consts["flag"]) is bool
    hash(options)  # still a frozen, hashable value
    assert options == CompileOptions.create(const_inputs={"bias": consts["bias"], "scale": 0.5, "flag": True,
                                                          "k": 3, "axes": (0, 1)})


@pytest.mark.parametrize("bad", ["0.5", None, {"a": 1}, [[1, 2], [3]], np.array(["a"]), 1 + 2j])
def test_non_numeric_const_input_is_rejected_before_any_build(bad):
    with pytest.raises(TvmcompressError) as excinfo:
        CompileOptions.create(const_inputs={"scale": bad})
    message = str(excinfo.value)
    assert "\n" not in message and "'scale'" in message and "not a number" in message


def test_compile_with_numpy_const_inputs_writes_the_manifest_and_matches_onnxruntime(tmp_path):
    model = scale_bias_model()
    bias = np.array([[0.1, -0.2, 0.3, -0.4], [0.5, 0.0, -0.6, 0.7]], np.float32)
    options = CompileOptions.create(const_inputs={"scale": np.array(0.5, np.float32), "bias": bias})
    out = tmp_path / "out"
    tvmcompress.compile(model, "host", output=str(out), options=options)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "x", "shape": [2, 4], "dtype": "float32"}]
    assert manifest["passes"][0]["options"]["const_inputs"] == {"bias": bias.tolist(), "scale": 0.5}
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    got = tvmcompress.load(str(out)).run({"x": x})["y"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x, "scale": np.array(0.5, np.float32), "bias": bias})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
