"""Pooling rule: reductions over non-innermost axes with channels innermost (NHWC pooling, global
average pool as mean over H and W).

Each reduction block is ordered spatial_outer (parallel) / reduce / channels (vectorized); spatial
producers (pad) are inlined when possible and spatial consumers (the divide of an average) get the
injective treatment.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import innermost_output_is_last_spatial, is_spatial_block, root_blocks, schedule_reduction_block, schedule_spatial_block
from .injective import inline_producers
from .rule_base import CPURule
from .target_info import cpu_info


class Pooling(CPURule):
    """Channel-vectorized reductions (pooling, spatial means)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        reductions = [b for b in root_blocks(sch) if not is_spatial_block(sch, b)]
        if not reductions:
            return None
        for block in reductions:
            stmt = sch.get(block)
            reduce_vars = {iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.CommReduce}
            last = stmt.writes[0].region[-1].min if stmt.writes else None
            if not innermost_output_is_last_spatial(sch, block) or last in reduce_vars:
                return None
            # The innermost read index must not be a reduction var (else it is a row reduction).
            for read in stmt.reads:
                idx = read.region[-1].min
                if isinstance(idx, tirx.Var) and any(idx.same_as(v) for v in reduce_vars):
                    return None
        inline_producers(sch)
        lanes = cpu_info(target).lanes(32)
        for block in root_blocks(sch):
            if is_spatial_block(sch, block):
                schedule_spatial_block(sch, block, lanes)
            elif not schedule_reduction_block(sch, block, lanes):
                return None
        return sch
