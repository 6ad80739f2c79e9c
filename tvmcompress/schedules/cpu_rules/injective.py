"""Injective rule: PrimFuncs made only of spatial blocks (elementwise, broadcast, transpose, pad).

Inlines every block it can into its consumers, then gives each remaining block the spatial treatment
of common.schedule_spatial_block: all loops fused, a SIMD-wide inner piece vectorized, the rest
parallel when the nest is large enough to pay for a thread launch.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import Expr as PrimExpr  # TVM 0.27: the base class of TIR expressions
from tvm.target import Target

from .common import is_opaque_block, is_spatial_block, root_blocks, schedule_spatial_block
from .rule_base import CPURule
from .target_info import cpu_info


def inline_producers(sch: s_tir.Schedule) -> None:
    """compute_inline every root block except the last that can be inlined (program order); nothing when a root
    block is opaque."""
    blocks = root_blocks(sch)
    # An opaque block (one that declares no reads and no writes: an extern call through call_packed, ir_builder
    # code such as NonMaxSuppression's) uses buffers the schedule cannot see; inlining a producer that it reads
    # would leave it reading a buffer that no longer exists, which fails at build time.
    if any(is_opaque_block(sch, block) for block in blocks):
        return
    for index, block in enumerate(blocks[:-1]):
        if not is_spatial_block(sch, block):
            continue
        if _inlining_blows_up(sch, block, blocks[index + 1:]):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


# Expression-tree nodes a block's value may reach through inlining. TIR expressions are trees to every pass and to
# codegen: inlining a producer that its consumer reads k times copies it k times. FastMathTransform's tanh reads
# its operand ~27 times (clamp, x*x, two polynomials), so Tanh(Tanh(Exp(..))) fused and fully inlined became a
# ~10^5-node expression (10^4 Let bindings after PropagateNaN) that TVM's lowering and LLVM never finished
# (fuzz seed 152). Past this size the producer stays a (small) buffer of its own; a usual elementwise chain reads
# each producer once and stays far below it.
_MAX_INLINED_NODES = 4096


def _tree_size(expr, buffer, cap: int) -> tuple[int, int]:
    """(nodes of `expr` counted as a tree, loads of `buffer` in it), counting stops past `cap` nodes."""
    nodes = loads = 0
    stack = [expr]
    while stack and nodes <= cap:
        node = stack.pop()
        nodes += 1
        source = getattr(node, "source", None)  # TVM 0.27's BufferLoad is a TensorLoad of a `source` buffer
        if source is not None and hasattr(node, "indices"):
            loads += int(buffer is not None and source.same_as(buffer))
            stack.extend(node.indices)
            continue
        for name in ("a", "b", "value", "body", "condition", "true_value", "false_value", "base", "stride"):
            child = getattr(node, name, None)
            if isinstance(child, PrimExpr):
                stack.append(child)
        for name in ("args", "indices"):
            stack.extend(c for c in getattr(node, name, ()) if isinstance(c, PrimExpr))
    return nodes, loads


def _store_value(sch: s_tir.Schedule, block):
    body = sch.get(block).body
    return getattr(body, "value", None) if isinstance(body, tirx.BufferStore) else None


def _inlining_blows_up(sch: s_tir.Schedule, block, later) -> bool:
    """Whether inlining `block` would make some later block's value larger than _MAX_INLINED_NODES nodes."""
    value = _store_value(sch, block)
    if value is None:
        return False
    buffer = sch.get(block).body.buffer
    size, _ = _tree_size(value, None, _MAX_INLINED_NODES)
    for consumer in later:
        consumer_value = _store_value(sch, consumer)
        if consumer_value is None:
            continue
        consumer_size, uses = _tree_size(consumer_value, buffer, _MAX_INLINED_NODES)
        if consumer_size + uses * size > _MAX_INLINED_NODES:
            return True
    return False


class Injective(CPURule):
    """Parallel + vectorized loops for purely spatial PrimFuncs."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = root_blocks(sch)
        if not blocks or not all(is_spatial_block(sch, b) for b in blocks):
            return None
        inline_producers(sch)
        lanes = cpu_info(target).lanes(32)
        for block in root_blocks(sch):
            schedule_spatial_block(sch, block, lanes)
        return sch
