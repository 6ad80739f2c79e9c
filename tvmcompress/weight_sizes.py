"""The manifest's `sizes.weights_breakdown`: bytes of a model's weights after each compression stage.

Each stage is measured on the constants of the module it produced (numbers, not estimates, except where a
storage format is described instead of written; each says which):
- `dense_fp32`: the source ONNX model's floating-point initializers at 4 bytes per element.
- `after_pruning`: the float module after pruning, each tensor stored as its nonzeros plus a 1-bit-per-element
  presence bitmap when that is smaller than dense (a format we describe; the library keeps tensors dense).
- `after_quantization`: the module after quantization (int8 weights, int32 biases, float scales), tensors
  stored the same way (nonzeros + bitmap when smaller).
- `after_clustering`: as after_quantization, but a weight tensor (rank >= 2) with at most 2^B distinct values
  is stored as B-bit indices (of every element, or of the nonzeros plus a presence bitmap when smaller) plus
  its codebook (its distinct values, in its dtype) (a format we describe).
- `after_entropy_coding`: the sum of the TVCW blobs (tvmcompress/weight_codec.py) of every constant of the
  final module, coded per tensor: bytes really produced by the coder.
- `weights_file_stored`: with --compress-weights, the stored bytes of weights.bin's tensors (the library's own
  constants, after layout packing), and `weights_file`: the file's size (header and 64-byte alignment included).
Stages that did not run are null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

__all__ = ["module_constants", "weights_breakdown"]


def module_constants(mod) -> list[np.ndarray]:
    """The distinct tensor constants of the module's Relax functions (each once)."""
    from tvm import relax
    from tvm.ir.expr import GenericConst

    seen: dict = {}

    def visit(expr):
        if isinstance(expr, GenericConst) and hasattr(expr.value, "numpy"):
            seen.setdefault(expr, None)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return [c.value.numpy() for c in seen]


def _sparse_or_dense(array: np.ndarray) -> int:
    nonzero = int(np.count_nonzero(array))
    return min(array.nbytes, nonzero * array.itemsize + (array.size + 7) // 8)


def _clustered(array: np.ndarray, bits: int) -> int:
    if array.ndim < 2:
        return _sparse_or_dense(array)
    values = np.unique(array)
    if len(values) > 2**bits:
        return _sparse_or_dense(array)
    nonzero = int(np.count_nonzero(array))
    indices = min(array.size * bits, nonzero * bits + array.size)  # dense, or nonzeros' indices + bitmap
    return (indices + 7) // 8 + len(values) * array.itemsize


def dense_fp32_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        if onnx.helper.tensor_dtype_to_np_dtype(init.data_type).kind == "f":
            total += int(np.prod(init.dims, dtype=np.int64)) * 4
    return total


def weights_breakdown(
    source: onnx.ModelProto,
    pruned=None,
    quantized=None,
    final=None,
    cluster_bits: int | None = None,
    weights_file: str | None = None,
) -> dict[str, Any]:
    """Bytes per stage (see the module docstring). `pruned` / `quantized`: the modules after those stages, or
    None where the stage did not run; `final`: the module handed to the build (coded when given)."""
    from . import weight_codec

    after_quant = [_sparse_or_dense(a) for a in module_constants(quantized)] if quantized is not None else None
    final_constants = module_constants(final) if final is not None else []
    breakdown: dict[str, Any] = {
        "dense_fp32": dense_fp32_bytes(source),
        "after_pruning": sum(_sparse_or_dense(a) for a in module_constants(pruned)) if pruned is not None else None,
        "after_quantization": sum(after_quant) if after_quant is not None else None,
        "after_clustering": sum(_clustered(a, cluster_bits) for a in final_constants) if cluster_bits else None,
        "after_entropy_coding": (sum(len(weight_codec.encode_array(a)) for a in final_constants)
                                 if final is not None else None),
        "weights_file_stored": None,
        "weights_file": None,
    }
    if weights_file is not None:
        import os

        from .weights_file import read_header

        codec, entries = read_header(weights_file)
        breakdown["weights_file_codec"] = codec
        breakdown["weights_file_stored"] = sum(e.stored_bytes for e in entries)
        breakdown["weights_file"] = os.path.getsize(weights_file)
    coded = breakdown["weights_file_stored"] or breakdown["after_entropy_coding"]
    if coded:
        breakdown["ratio_to_dense_fp32"] = round(breakdown["dense_fp32"] / coded, 3)
    return breakdown
