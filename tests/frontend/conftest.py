"""Small ONNX models for the frontend tests, built with onnx.helper (and one real torch export).

Weights are drawn at scale 0.1-0.3 so activations stay O(1) and absolute tolerances mean what they say.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from frontend_models import const_tensor, make_model, value
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def exporter_model(rng):
    """What exporters emit for `x.view(x.size(0), -1) @ W` after a Conv, with two `If`s on constant conditions.

    Batch is dynamic ("batch"). The reshape target is computed at run time: Shape -> Gather -> Unsqueeze ->
    Cast -> Cast (exporters round-trip sizes through float) -> Concat with a [-1] that an `If` on a constant
    picks. TVM 0.27 imports neither the Cast nor the If form ("Reshape requires the input new shape to be
    Shape"). Constants are `Constant` nodes with `value` tensors, as exporters write them.
    """
    weight = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    matrix = (0.1 * rng.standard_normal((4 * 6 * 6, 5))).astype(np.float32)

    def branch(name, nodes, out, shape=None):
        elem_type = TensorProto.INT64 if shape else TensorProto.FLOAT
        return helper.make_graph(nodes, name, [], [value(out, shape, elem_type)])

    flat_then = branch("flat_then", [helper.make_node("Constant", [], ["t_shape"],
                                                     value=const_tensor(np.array([-1], np.int64)))], "t_shape", [1])
    flat_else = branch("flat_else", [helper.make_node("Constant", [], ["e_shape"],
                                                     value=const_tensor(np.array([144], np.int64)))], "e_shape", [1])
    act_then = branch("act_then", [helper.make_node("Relu", ["mm"], ["then_out"])], "then_out")
    act_else = branch("act_else", [helper.make_node("Neg", ["mm"], ["else_out"])], "else_out")
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["conv"], name="conv0"),
        helper.make_node("Shape", ["conv"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=const_tensor(np.array(0, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Constant", [], ["axes"], value=const_tensor(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Cast", ["batch1"], ["batch_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["batch_f"], ["batch_i"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["flatten_all"], value=const_tensor(np.array(True))),
        helper.make_node("If", ["flatten_all"], ["rest"], then_branch=flat_then, else_branch=flat_else),
        helper.make_node("Concat", ["batch_i", "rest"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["conv", "new_shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "M"], ["mm"], name="fc"),
        helper.make_node("Constant", [], ["use_relu"], value=const_tensor(np.array(True))),
        helper.make_node("If", ["use_relu"], ["y"], then_branch=act_then, else_branch=act_else),
    ]
    return make_model(
        nodes,
        [value("x", ["batch", 3, 8, 8])],
        [value("y", ["batch", 5])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(matrix, "M")],
        opset=17,
    )


@pytest.fixture
def paddle_model(rng):
    """Paddle-style: no initializers, every weight in a Constant node, in each `value*` attribute form."""
    weight = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    dense = (0.3 * rng.standard_normal((16, 6))).astype(np.float32)
    dense[dense < 0.1] = 0.0  # sparse_value: keep about a third of the entries
    nz = np.flatnonzero(dense)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(dense.reshape(-1)[nz], "w_sparse"),
        numpy_helper.from_array(nz.astype(np.int64), "w_sparse_indices"),
        list(dense.shape),
    )
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(weight)),
        helper.make_node("Conv", ["x", "W"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["bias"], value_floats=[0.1, -0.2, 0.3, 0.0]),
        helper.make_node("Constant", [], ["bias_shape"], value_ints=[1, 4, 1, 1]),
        helper.make_node("Reshape", ["bias", "bias_shape"], ["bias4"]),
        helper.make_node("Add", ["conv", "bias4"], ["biased"]),
        helper.make_node("Constant", [], ["scale"], value_float=0.5),
        helper.make_node("Mul", ["biased", "scale"], ["scaled"]),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pooled"]),
        helper.make_node("Constant", [], ["flat_shape"], value_ints=[1, 4]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("Constant", [], ["cumsum_axis"], value_int=1),
        helper.make_node("CumSum", ["flat", "cumsum_axis"], ["summed"]),
        helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(np.array([0, 0, 0, 12], np.int64))),
        helper.make_node("Pad", ["summed", "pads"], ["padded"]),
        helper.make_node("Constant", [], ["Wd"], sparse_value=sparse),
        helper.make_node("MatMul", ["padded", "Wd"], ["y"]),
    ]
    return make_model(nodes, [value("x", [1, 3, 8, 8])], [value("y", [1, 6])], opset=13)


@pytest.fixture
def const_input_model(rng):
    """Inputs `scale` (scalar) and `use_relu` (bool, drives an If) meant to be specialized; `bias` has a dynamic
    dim, which binding it as a constant makes moot."""
    then_branch = helper.make_graph([helper.make_node("Relu", ["scaled"], ["then_out"])], "then", [],
                                    [value("then_out", None)])
    else_branch = helper.make_graph([helper.make_node("Sigmoid", ["scaled"], ["else_out"])], "else", [],
                                    [value("else_out", None)])
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["mul"]),
        helper.make_node("Add", ["mul", "bias"], ["scaled"]),
        helper.make_node("If", ["use_relu"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    return make_model(
        nodes,
        [value("x", [2, 4]), value("scale", []), value("bias", ["n"]), value("use_relu", [], TensorProto.BOOL)],
        [value("y", [2, 4])],
        opset=15,
    )


@pytest.fixture
def external_data_path(tmp_path, rng):
    """A Gemm model saved with its weights in model.onnx.data next to model.onnx."""
    weight = (0.1 * rng.standard_normal((64, 32))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(32)).astype(np.float32)
    model = make_model(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])],
        [value("x", [2, 64])],
        [value("y", [2, 32])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
        opset=14,
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    return path


@pytest.fixture(scope="session")
def torch_exported_bytes():
    """A real exporter graph: torch's TorchScript exporter with a dynamic batch (`view(x.size(0), -1)`)."""
    torch = pytest.importorskip("torch")
    import io
    import warnings

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; dynamo export needs onnxscript
        torch.onnx.export(Net().eval(), (torch.randn(2, 3, 8, 8),), buffer, dynamo=False, opset_version=13,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()
