"""Gather, GatherElements, GatherND, ScatterElements and ScatterND with their indices checked at run time.

TVM 0.27 lowers these ops to kernels that use an index as an address as it is: an index past the axis reads
memory beyond the tensor (or segfaults the process), and ScatterElements writes there; its ScatterElements does
not even count negative indices from the end. ONNX says that an index i of an axis of size n is valid in
[-n, n-1], a negative one counting from the end, and onnxruntime refuses any other.

So each converter here passes the indices through `checked_indices` before TVM's op: one small loop over the
indices (not over the data) that adds n to a negative index and stops the call with an `IndexError`
(a TIR assert: the kernel returns an error code, which the Relax VM raises, on every target and in the exported
C bundle) naming the node and the input. The op then only ever sees indices in [0, n-1]. Constant indices are
checked here, at import, instead. The loop costs O(number of indices), against the op's O(number of indices x
row length); bench/bench_runtime_checks.py measures it (BENCHMARKS.md, section runtime-checks).

INDEX_ERROR_PREFIX starts every such message, so that runners can tell a bad input from a broken library.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from tvm import relax, tirx
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter
from tvm.script import tirx as T

from ..errors import TvmcompressError
from .relax_helpers import constant_value, dtype_of, shape_of

R = relax.op

INDEX_ERROR_PREFIX = "index out of range"
# The key under which importer._Importer hands converters the names of the graph's inputs (by Relax Var).
GRAPH_INPUTS_KEY = "graph_inputs"


def where_indices(attr: dict, position: int, name: str, indices: relax.Expr) -> str:
    """'Gather node "g1", input 1 (indices = model input "ids")': what the message names."""
    custom = attr.get("tvm_custom", {})
    node = custom.get("op_type", "the op")
    if custom.get("name"):
        node += f' node "{custom["name"]}"'
    where = f"{node}, input {position} ({name}"
    graph_inputs = custom.get(GRAPH_INPUTS_KEY, {})
    if isinstance(indices, relax.Var) and indices.same_as(graph_inputs.get(indices.name)):
        where += f' = model input "{indices.name}"'
    return where + ")"


def checked_indices(
    bb, indices: relax.Expr, extents: Sequence[int], where: str, per_coordinate: bool = False,
    allow_negative: bool = True,
) -> relax.Expr:
    """`indices` with negative entries counted from the end, or an IndexError at run time.

    `extents` holds the one axis size of every entry, or with `per_coordinate` one per coordinate of the last
    axis of `indices` (GatherND, ScatterND). `allow_negative=False` takes [0, n-1] as the valid range.
    """
    shape, dtype = shape_of(indices), dtype_of(indices)
    allow_negative = allow_negative and not dtype.startswith("uint")
    k = len(extents) if per_coordinate else 1
    m = math.prod(shape) // k
    low = "-n" if allow_negative else "0"
    ranges = f"[{low}, n-1] for the axis sizes n = {tuple(extents)}" if per_coordinate else (
        f"[{-extents[0] if allow_negative else 0}, {extents[0] - 1}]"
    )
    message = f"{INDEX_ERROR_PREFIX}: {where} holds an index outside {ranges}"

    value = constant_value(indices)
    if value is not None:
        return relax.const(_check_constant(value.reshape(m, k), extents, allow_negative, message).reshape(shape), dtype)
    func = _check_func(m, k, dtype, tuple(int(n) for n in extents), allow_negative, message)
    gvar = bb.add_func(func, "check_indices")
    flat = bb.normalize(R.reshape(indices, (m, k)))
    out = bb.emit(relax.call_tir(gvar, [flat], relax.TensorType((m, k), dtype)))
    return bb.normalize(R.reshape(out, shape))


def _check_constant(value: np.ndarray, extents, allow_negative: bool, message: str) -> np.ndarray:
    n = np.asarray(extents, dtype=np.int64)
    wide = value.astype(np.int64)
    normalized = np.where(wide < 0, wide + n, wide) if allow_negative else wide
    if ((normalized < 0) | (normalized >= n)).any():
        raise TvmcompressError(message.replace(INDEX_ERROR_PREFIX, "constant " + INDEX_ERROR_PREFIX) + ": fix the model")
    return normalized.astype(value.dtype)


def _check_func(m: int, k: int, dtype: str, extents: tuple, allow_negative: bool, message: str) -> tirx.PrimFunc:
    """out[i, j] = idx[i, j] (+ n_j when negative), asserting 0 <= out < n_j. The extents are constants, picked
    per coordinate by a Select chain (k <= rank of the data, so a few terms at most)."""

    def extent(j):
        n = tirx.const(extents[-1], dtype)
        for slot in range(len(extents) - 2, -1, -1):
            n = tirx.Select(j == slot, tirx.const(extents[slot], dtype), n)
        return n

    shift = 1 if allow_negative else 0

    @T.prim_func(private=True, s_tir=True)
    def check_indices(idx: T.Buffer((m, k), dtype), out: T.Buffer((m, k), dtype)):
        # Opaque (FuseOps leaves it alone): the assert must stay in a kernel of its own, before the op.
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        with T.sblock("check_indices"):
            for i, j in T.grid(m, k):
                v = T.Select(idx[i, j] < T.Cast(dtype, 0), idx[i, j] + extent(j) * T.Cast(dtype, shift), idx[i, j])
                T.Assert(T.Cast(dtype, 0) <= v and v < extent(j), message, "IndexError")
                out[i, j] = v

    return check_indices


def _data_extent(data: relax.Expr, axis: int) -> tuple[int, int]:
    shape = shape_of(data)
    return axis % len(shape), shape[axis % len(shape)]


def _coordinate_extents(data: relax.Expr, indices: relax.Expr, batch_dims: int) -> list[int]:
    """The axis size that each coordinate of indices' last axis addresses (GatherND, ScatterND)."""
    k = shape_of(indices)[-1]
    return list(shape_of(data)[batch_dims : batch_dims + k])


def _reduction(attr: dict, opset: int) -> str:
    allowed = ["update", "add", "mul", "min", "max"][: 1 if opset < 16 else 3 if opset < 18 else 5]
    return tvm_onnx._get_onnx_reduction(attr, allowed)  # noqa: SLF001 - TVM's own reading of `reduction`


class _CheckedIndicesOp(OnnxOpConverter):
    """The shape all five converters share: input 1 holds the indices; `extents` says which axis sizes they
    address, `checked_indices` bounds them, `call` builds TVM's op on the checked ones. `per_coordinate`: one
    extent per coordinate of indices' last axis (the ND ops); no extents: nothing to check."""

    per_coordinate = False

    @classmethod
    def extents(cls, data: relax.Expr, indices: relax.Expr, attr: dict) -> list[int]:
        return [_data_extent(data, int(attr.get("axis", 0)))[1]]

    @classmethod
    def call(cls, inputs: Sequence[relax.Expr], indices: relax.Expr, attr: dict, opset: int) -> relax.Expr:
        raise NotImplementedError

    @classmethod
    def get_converter(cls, opset):
        return lambda bb, inputs, attr, params: cls._impl(bb, inputs, attr, opset)

    @classmethod
    def _impl(cls, bb, inputs, attr, opset):
        data, indices = inputs[0], inputs[1]
        extents = cls.extents(data, indices, attr)
        if extents:
            where = where_indices(attr, 1, "indices", indices)
            indices = checked_indices(bb, indices, extents, where, per_coordinate=cls.per_coordinate)
        return cls.call(inputs, indices, attr, opset)


def _axis(inputs: Sequence[relax.Expr], attr: dict) -> int:
    return _data_extent(inputs[0], int(attr.get("axis", 0)))[0]


class Gather(_CheckedIndicesOp):
    """relax.take on checked indices. Shape expressions and all-constant inputs stay with TVM's converter,
    which computes them at import."""

    @classmethod
    def get_converter(cls, opset):
        def convert(bb, inputs, attr, params):
            data, indices = inputs[0], inputs[1]
            if isinstance(data, relax.ShapeExpr) or isinstance(indices, relax.ShapeExpr) or (
                constant_value(data) is not None and constant_value(indices) is not None
            ):
                return tvm_onnx.Gather._impl_v13(bb, inputs, attr, params)
            return cls._impl(bb, inputs, attr, opset)

        return convert

    @classmethod
    def call(cls, inputs, indices, attr, opset):
        return R.take(inputs[0], indices, _axis(inputs, attr))


class GatherElements(_CheckedIndicesOp):
    @classmethod
    def call(cls, inputs, indices, attr, opset):
        return R.gather_elements(inputs[0], indices, _axis(inputs, attr))


class ScatterElements(_CheckedIndicesOp):
    @classmethod
    def call(cls, inputs, indices, attr, opset):
        return R.scatter_elements(inputs[0], indices, inputs[2], axis=_axis(inputs, attr),
                                  reduction=_reduction(attr, opset))


class GatherND(_CheckedIndicesOp):
    per_coordinate = True

    @classmethod
    def extents(cls, data, indices, attr):  # an empty coordinate takes whole slices: nothing to check
        return _coordinate_extents(data, indices, int(attr.get("batch_dims", 0)))

    @classmethod
    def call(cls, inputs, indices, attr, opset):
        return R.gather_nd(inputs[0], indices, int(attr.get("batch_dims", 0)))


class ScatterND(_CheckedIndicesOp):
    per_coordinate = True

    @classmethod
    def extents(cls, data, indices, attr):
        return _coordinate_extents(data, indices, 0)

    @classmethod
    def call(cls, inputs, indices, attr, opset):
        return R.scatter_nd(inputs[0], indices, inputs[2], _reduction(attr, opset))
