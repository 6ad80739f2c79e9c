"""ReduceMax and ReduceMin of floating-point tensors, with -inf / +inf as the identity.

TVM 0.27's `max`/`min` start from the lowest/highest finite value, so a reduction over only -inf values (a fully
masked attention row) or over an empty axis returns -3.4e38 where ONNX says -inf. We keep TVM's converter for
the attribute and axes handling, and replace the `relax.max`/`relax.min` call it makes by a TE reduction with
an infinite identity. Integer reductions stay as TVM makes them (their identities are right); bool ones, which
TVM cannot compile, go through uint8.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import dtype_of, shape_of

_MAX, _MIN = tvm.ir.Op.get("relax.max"), tvm.ir.Op.get("relax.min")


def _reduce(x: te.Tensor, axes: list[int], keepdims: bool, is_max: bool, identity) -> te.Tensor:
    rank = len(x.shape)
    combine = tirx.max if is_max else tirx.min
    reducer = te.comm_reducer(lambda a, b: combine(a, b), lambda t: tirx.const(identity, t))
    reduce_axes = {a: te.reduce_axis((0, x.shape[a]), name=f"k{a}") for a in axes}
    out_shape = [1 if i in reduce_axes else x.shape[i] for i in range(rank) if keepdims or i not in reduce_axes]

    def body(*index):
        it = iter(index)
        full = []
        for i in range(rank):
            if i in reduce_axes:
                if keepdims:
                    next(it)
                full.append(reduce_axes[i])
            else:
                full.append(next(it))
        return reducer(x[tuple(full)], axis=list(reduce_axes.values()))

    return te.compute(out_shape, body, name="reduce_max" if is_max else "reduce_min")


def _wrap(tvm_converter):
    class Wrapped(OnnxOpConverter):
        @classmethod
        def get_converter(cls, opset):
            convert = tvm_converter.get_converter(opset)

            def converted(bb, inputs, attr, params):
                expr = convert(bb, inputs, attr, params)
                if not (isinstance(expr, relax.Call) and expr.op in (_MAX, _MIN)):
                    return expr
                x = expr.args[0]
                dtype = dtype_of(x)
                if dtype not in ("bool", "float16", "float32", "float64"):
                    return expr
                is_max = expr.op == _MAX
                rank = len(shape_of(x))
                axes = expr.attrs.axis
                axes = list(range(rank)) if axes is None else sorted(int(a) % rank for a in axes)
                keepdims = bool(expr.attrs.keepdims)
                shape = shape_of(x)
                if any(shape[a] == 0 for a in axes):
                    # An empty reduction is its identity. Not a TIR reduction: lowering puts the init inside the
                    # (zero-trip) reduction loop, so the output would stay uninitialized memory.
                    out = [1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes]
                    fill = (False if is_max else True) if dtype == "bool" else (float("-inf") if is_max else float("inf"))
                    return relax.const(np.full(out, fill, dtype=dtype), dtype)
                if dtype == "bool":  # TVM cannot reduce bools: uint8, identity 0 for max (any) and 1 for min (all)
                    as_int = bb.normalize(relax.op.astype(x, "uint8"))
                    reduced = bb.emit_te(_reduce, as_int, axes, keepdims, is_max, 0 if is_max else 1)
                    return relax.op.astype(reduced, "bool")
                identity = float("-inf") if is_max else float("inf")
                return bb.emit_te(_reduce, x, axes, keepdims, is_max, identity)

            return converted

    Wrapped.__name__ = tvm_converter.__name__
    return Wrapped


ReduceMax = _wrap(tvm_onnx.ReduceMax)
ReduceMin = _wrap(tvm_onnx.ReduceMin)
