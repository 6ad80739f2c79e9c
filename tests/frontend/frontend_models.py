"""Helpers that build small ONNX models with onnx.helper; shared by the frontend tests and their fixtures.

(A plainly named module rather than conftest.py, so that `import` finds it even when other test folders have
their own conftest.py.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9


def make_model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name="tvmcompress-tests")
    onnx.checker.check_model(model)
    return model


def value(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def const_tensor(array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array))
