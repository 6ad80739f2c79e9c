"""Fallback rule: matches every PrimFunc, so nothing leaves the pipeline unscheduled.

Inlines what it can, then per root block: spatial blocks get parallel + vectorized loops, plain
reduction blocks get parallel spatial loops over serial reductions (vectorized over the innermost
output axis when it is unit-stride). Blocks it cannot reason about are left as they are.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import is_spatial_block, root_blocks, schedule_reduction_block, schedule_spatial_block
from .injective import inline_producers
from .rule_base import CPURule
from .target_info import cpu_info


class Fallback(CPURule):
    """Last-resort parallel + vectorized treatment, applied block by block."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        lanes = cpu_info(target).lanes(32)
        sch = s_tir.Schedule(func)
        inline_producers(sch)
        for block in root_blocks(sch):
            # Each block on its own: a failure must not cost the others their treatment.
            checkpoint = sch.copy()
            try:
                if is_spatial_block(sch, block):
                    schedule_spatial_block(sch, block, lanes)
                else:
                    schedule_reduction_block(sch, block, lanes)
            except s_tir.ScheduleError:
                sch = checkpoint
        return sch
