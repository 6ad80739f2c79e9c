"""Base class of the CPU schedule rules: dlight's ScheduleRule, restricted to LLVM targets."""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target


class CPURule(ScheduleRule):
    """A dlight ScheduleRule that applies only to `llvm` targets; apply() returns None to pass."""

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"
