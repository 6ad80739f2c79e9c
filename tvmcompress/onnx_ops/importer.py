"""TVM's ONNX importer with our converters in front of its own.

`from_onnx` is TVM's `from_onnx` (weights bound as constants) with one change: default-domain nodes whose op
type has a converter in `tvmcompress.onnx_ops` are converted by it. TVM's importer matches converters on the op
type alone, so those nodes are renamed `tvmcompress:<Op>` in a copy of the model; a standard `Attention` then
no longer reaches TVM's converter for com.microsoft's `Attention`.
"""

from __future__ import annotations

import onnx
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

from ..onnx_graphs import all_graphs
from ..sub_byte_io import library_dtype
from . import ROUTED_PREFIX, converter_for, sub_byte
from .indexing import GRAPH_INPUTS_KEY

_DEFAULT_DOMAINS = ("", "ai.onnx")


class _Importer(ONNXGraphImporter):
    def _convert_operator(self, op_name, inputs, attrs, opset):
        if not op_name.startswith(ROUTED_PREFIX):
            return super()._convert_operator(op_name, inputs, attrs, opset)
        op_type = op_name.removeprefix(ROUTED_PREFIX)
        converter = converter_for(op_type, opset)
        # What a converter's run-time error names (indexing.py): the op and which graph input fed it.
        attrs["tvm_custom"] = {**attrs.get("tvm_custom", {}), "op_type": op_type, GRAPH_INPUTS_KEY: dict(self._inputs)}
        expr = converter.get_converter(opset)(self.bb, inputs, attrs, [self._nodes, self._params])
        return self.bb.normalize(expr) if isinstance(expr, relax.Expr) else expr

    def _check_for_unsupported_ops(self, graph):
        # frontend.check_supported ran before import and knows our converters; TVM's check does not.
        pass


def route_to_converters(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """A copy of `model` in which the nodes our converters handle are renamed `tvmcompress:<Op>`, and sub-byte
    types are carried in wider ones (sub_byte.lower_model)."""
    routed = onnx.ModelProto()
    routed.CopyFrom(model)
    sub_byte.lower_model(routed, list(all_graphs(routed.graph)))
    for graph in all_graphs(routed.graph):
        for node in graph.node:
            if node.domain in _DEFAULT_DOMAINS and converter_for(node.op_type, opset) is not None:
                node.op_type = ROUTED_PREFIX + node.op_type
    return routed


def from_onnx(model: onnx.ModelProto, shape_dict: dict, dtype_dict: dict):
    """Import `model` (canonical: static shapes, opset checked) into a Relax IRModule, weights as constants."""
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 1)
    # Sub-byte inputs arrive in their library dtype (tvmcompress/sub_byte_io.py).
    dtype_dict = {name: library_dtype(dtype) for name, dtype in dtype_dict.items()}
    # NOTE: sanitize=False keeps each Relax parameter named exactly as its ONNX input ("input.1", not TVM's
    # "input_1"): calibration, eval data and prune batches are keyed by the ONNX names and read by parameter name.
    importer = _Importer(shape_dict, dtype_dict, keep_params_in_input=False, sanitize=False)
    return importer.from_onnx(route_to_converters(model, opset).graph, opset)


