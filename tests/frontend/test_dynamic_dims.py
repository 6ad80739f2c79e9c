"""Dynamic dims in the forms exporters write them: `dim_param`, an unset dim, and Paddle2ONNX's `dim_value: -1`.

Issue 17: a Paddle2ONNX model (`x: [-1, 3, -1, -1]`) could not be compiled at all: -1 was read as a fixed size,
`--input-shape x=1,3,48,192` was refused with the advice `keep -1`, and -1 is refused as an --input-shape dim.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from frontend_models import make_model, value
from onnx import helper, numpy_helper

import tvmcompress
from tvmcompress.cli import main
from tvmcompress.errors import TvmcompressError
from tvmcompress.frontend import TensorSpec, canonicalize, load_model, model_io


def paddle_style_conv(rng) -> onnx.ModelProto:
    """Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->2, 1x1), every batch and spatial dim written as -1, in the graph
    input, the output and the value_info, as Paddle2ONNX before late 2022 wrote them."""
    w1 = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(4)).astype(np.float32)
    w2 = (0.3 * rng.standard_normal((2, 4, 1, 1))).astype(np.float32)
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv2d_0"),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu_0"),
            helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2d_1"),
        ],
        [value("x", [-1, 3, -1, -1])],
        [value("y", [-1, 2, -1, -1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
        opset=11,
    )
    model.graph.value_info.extend([value("c1", [-1, 4, -1, -1]), value("r1", [-1, 4, -1, -1])])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [-1, 3, -1, -1] and all(d.HasField("dim_value") for d in dims)
    return model


def test_minus_one_dims_are_dynamic_and_named_as_written(rng):
    model = load_model(paddle_style_conv(rng))
    assert model_io(model)[0] == [TensorSpec("x", (-1, 3, -1, -1), "float32")]
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(model)
    message = str(excinfo.value)
    assert message == "input 'x' has dynamic dims [-1, 3, -1, -1]; pass --input-shape x=1,3,1,1"
    # The advice is accepted as given.
    canonical = canonicalize(model, {"x": (1, 3, 1, 1)})
    assert model_io(canonical) == ([TensorSpec("x", (1, 3, 1, 1), "float32")],
                                   [TensorSpec("y", (1, 2, 1, 1), "float32")])


def test_input_shape_fixes_minus_one_dims(rng):
    canonical = canonicalize(load_model(paddle_style_conv(rng)), {"x": (1, 3, 48, 192)})
    assert model_io(canonical) == ([TensorSpec("x", (1, 3, 48, 192), "float32")],
                                   [TensorSpec("y", (1, 2, 48, 192), "float32")])
    for vi in list(canonical.graph.value_info) + list(canonical.graph.output):
        assert all(d.HasField("dim_value") and d.dim_value > 0 for d in vi.type.tensor_type.shape.dim), vi


def test_contradicting_a_fixed_dim_gives_advice_that_is_accepted(rng):
    model = load_model(paddle_style_conv(rng))
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(model, {"x": (1, 4, 48, 192)})
    message = str(excinfo.value)
    assert message == ("--input-shape x=1,4,48,192 sets dim 1 to 4 but that dim of input 'x' is fixed at 3 in the "
                       "model ([-1, 3, -1, -1]): keep 3, as in --input-shape x=1,3,48,192")
    advised = tuple(int(d) for d in message.rpartition("x=")[2].split(","))
    assert model_io(canonicalize(model, {"x": advised}))[0] == [TensorSpec("x", (1, 3, 48, 192), "float32")]


def test_unset_dim_is_dynamic_and_zero_dim_is_a_size_that_input_shape_may_replace():
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    # 0 is a real zero-size dim (the node tests have such inputs) ...
    static = make_model(relu, [value("x", [0, 4])], [value("y", [0, 4])])
    assert model_io(canonicalize(static))[0] == [TensorSpec("x", (0, 4), "float32")]
    # ... unless --input-shape replaces it: the first paddle-onnx wrote 0 for an unknown dim. Next to a dynamic
    # dim (unset here, as onnx.helper writes None) the advice replaces it, and is accepted as given.
    model = make_model(relu, [value("x", [None, 0, 4])], [value("y", [None, 0, 4])])
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(model)
    assert str(excinfo.value) == "input 'x' has dynamic dims [?, 0, 4]; pass --input-shape x=1,1,4"
    assert model_io(canonicalize(model, {"x": (1, 1, 4)}))[0] == [TensorSpec("x", (1, 1, 4), "float32")]
    assert model_io(canonicalize(model, {"x": (2, 5, 4)}))[0] == [TensorSpec("x", (2, 5, 4), "float32")]


def test_paddle_style_model_compiles_with_input_shape_and_matches_onnxruntime(tmp_path, rng):
    model = paddle_style_conv(rng)
    path = tmp_path / "paddle.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    assert main(["-q", "compile", str(path), "-o", str(out), "--input-shape", "x=1,3,48,192"]) == 0
    x = rng.standard_normal((1, 3, 48, 192)).astype(np.float32)
    got = tvmcompress.load(out).run({"x": x})["y"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    assert got.shape == (1, 2, 48, 192)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
