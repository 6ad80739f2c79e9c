"""Inputs that TVM compiles only as constants (Slice's starts/ends/axes/steps, Expand's shape): a graph whose
values for them arrive at run time is rejected by canonicalize with one line that names the node, the inputs and
the --const-input that fixes it, not an internal error at build time (issue 17: `no definition of shape_func`,
`'ExternFunc' object has no attribute 'name'`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from frontend_models import make_model, value
from onnx import TensorProto, helper

from tvmcompress.errors import TvmcompressError
from tvmcompress.frontend import canonicalize, import_to_relax, model_io


def slice_model():
    """y = x[1:3, ::2] with starts and ends as graph inputs; the output shape is declared, as onnx's node tests
    declare it."""
    return make_model(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], name="crop")],
        [value("x", [4, 6]), value("starts", [2], TensorProto.INT64), value("ends", [2], TensorProto.INT64)],
        [value("y", [2, 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [0, 1]),
         helper.make_tensor("steps", TensorProto.INT64, [2], [1, 2])],
        opset=13,
    )


def expand_model():
    """Expand to a shape computed at run time from a float graph input (Cast), declared [3, 4]."""
    return make_model(
        [helper.make_node("Cast", ["dims"], ["shape"], to=TensorProto.INT64),
         helper.make_node("Expand", ["x", "shape"], ["y"], name="grow")],
        [value("x", [1, 4]), value("dims", [2])],
        [value("y", [3, 4])],
        opset=13,
    )


def test_slice_with_run_time_starts_and_ends_is_rejected_by_name():
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(slice_model())
    assert str(excinfo.value) == (
        "Slice node 'crop' takes its starts from graph input 'starts', ends from graph input 'ends'; TVM compiles "
        "Slice only with constant starts, ends, axes, steps: bind them to constants with "
        "--const-input starts=V1,V2,... --const-input ends=V1,V2,... (const_inputs in the API)"
    )


def test_expand_with_a_computed_shape_names_the_graph_input_it_comes_from():
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(expand_model())
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("Expand node 'grow' takes its shape from run-time value 'shape';")
    assert message.endswith("bind it to constants with --const-input dims=V1,V2,... (const_inputs in the API)")


def test_the_advised_const_inputs_compile_and_match_onnxruntime():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    model = slice_model()
    starts, ends = np.array([1, 0], np.int64), np.array([3, 6], np.int64)
    canonical = canonicalize(model, const_inputs={"starts": starts.tolist(), "ends": ends.tolist()})
    assert [spec.name for spec in model_io(canonical)[0]] == ["x"]
    vm = tvm.relax.VirtualMachine(tvm.compile(import_to_relax(canonical), "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x, "starts": starts, "ends": ends})
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, x[1:3, ::2])
