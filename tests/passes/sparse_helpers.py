"""Helpers of the block-sparse / clustering pass tests: small ONNX Dense models, imported and run by ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.frontend import canonicalize, import_to_relax
from tvmcompress.passes.quantize import prepare_for_quantization


def dense_model(weight: np.ndarray, rows: int, gemm: bool = False) -> onnx.ModelProto:
    """y = x @ W (MatMul, W [K, N]) or y = x @ W.T (Gemm transB=1, W [N, K]), x [rows, K]."""
    k = weight.shape[1] if gemm else weight.shape[0]
    n = weight.shape[0] if gemm else weight.shape[1]
    node = (helper.make_node("Gemm", ["x", "W"], ["y"], transB=1) if gemm
            else helper.make_node("MatMul", ["x", "W"], ["y"]))
    graph = helper.make_graph(
        [node], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def import_prepared(model: onnx.ModelProto):
    """Import into Relax with weights folded to plain [K, N] constants and unique binding names."""
    return prepare_for_quantization(import_to_relax(canonicalize(model, {})))


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]
