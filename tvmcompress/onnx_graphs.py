"""Walking an ONNX graph together with its subgraphs (If branches, Loop and Scan bodies)."""

from __future__ import annotations

from typing import Iterator

import onnx


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and all its subgraphs, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from all_graphs(attr.g)
            for sub in attr.graphs:
                yield from all_graphs(sub)


def value_types(graph: onnx.GraphProto) -> dict[str, int]:
    """ONNX element type (TensorProto.DataType) of every typed value of `graph`: inputs, value_info, outputs and
    initializers (not its subgraphs')."""
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(graph.input) + list(graph.value_info) + list(graph.output)
             if vi.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types
