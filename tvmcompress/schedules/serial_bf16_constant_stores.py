"""SerialBF16ConstantStores: run serially the vectorized loops that store a bfloat16 constant.

TVM 0.27's BF16StorageLegalize (the last pass of tirx.build) rewrites bfloat16 buffers to uint16 and their values
to the bits, but misses a broadcast bfloat16 constant: `o[i, c:c+16] = T.Broadcast(T.bfloat16(x), 16)` fails with
"dtype mismatch on BufferStore: buffer's dtype is T.uint16 ... RHS's dtype is T.bfloat16x16". Our rules vectorize
reduction init blocks along with their update (max pooling's -inf, a sum's 0), so every bf16 model with max
pooling failed to build (issue 17). A scalar constant store legalizes, so such a loop runs serially; it only fills
the accumulator once per output vector, off the hot loop.

Pre: scheduled PrimFuncs. Post: no vectorized loop holds a BufferStore of a FloatImm into a bfloat16 buffer; all
other loops are unchanged.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx


def _stores_bf16_constant(stmt: tirx.Stmt) -> bool:
    found = []

    def visit(store: tirx.BufferStore):
        if str(store.buffer.dtype) == "bfloat16" and isinstance(store.value, tirx.FloatImm):
            found.append(store)

    tvm_ffi.structural_walk(stmt, [(tirx.BufferStore, visit)], order="post")
    return bool(found)


def _with_kind(loop: tirx.For, kind, body: tirx.Stmt) -> tirx.For:
    return tirx.For(loop.loop_var, loop.min, loop.extent, kind, body, loop.thread_binding, loop.annotations)


def _rewrite_loop(loop: tirx.For, mutator) -> tirx.For:
    body = mutator.mutate(loop.body)
    if loop.kind == tirx.ForKind.VECTORIZED and _stores_bf16_constant(body):
        return _with_kind(loop, tirx.ForKind.SERIAL, body)
    return loop if body.same_as(loop.body) else _with_kind(loop, loop.kind, body)


@tirx.transform.prim_func_pass(opt_level=0, name="tvmcompress.SerialBF16ConstantStores")
def SerialBF16ConstantStores(func: tirx.PrimFunc, _mod: tvm.IRModule, _ctx) -> tirx.PrimFunc:  # noqa: N802 - a pass
    if not _stores_bf16_constant(func.body):
        return func
    return func.with_body(tvm_ffi.structural_mutate(func.body, [(tirx.For, _rewrite_loop)]))
