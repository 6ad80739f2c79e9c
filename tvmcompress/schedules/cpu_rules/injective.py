"""Injective rule: PrimFuncs made only of spatial blocks (elementwise, broadcast, transpose, pad).

Inlines every block it can into its consumers, then gives each remaining block the spatial treatment
of common.schedule_spatial_block: all loops fused, a SIMD-wide inner piece vectorized, the rest
parallel when the nest is large enough to pay for a thread launch.
"""

from __future__ import annotations

from tvm import s_tir, tirx
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
    for block in blocks[:-1]:
        if not is_spatial_block(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


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
