"""Normalization rule: softmax, layer norm, RMS norm (row reductions followed by elementwise blocks).

Reuses the structure of TVM's dlight `cpu.Reduction` rule: all blocks are computed under the shared
leading spatial loop (parallel over rows), elementwise blocks vectorized on the row, reduction
blocks split to SIMD-sized chunks and unrolled. This subclass only narrows it to LLVM targets and
reports a non-match as None so the next rule runs.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu import Reduction as _DlightCPUReduction
from tvm.target import Target

from .rule_base import CPURule


class Normalization(CPURule):
    """Row-parallel softmax / layer norm / RMS norm."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not self.is_target_available(target):
            return None
        try:
            return _DlightCPUReduction().apply(func, target, tunable)
        except s_tir.ScheduleError:
            return None
