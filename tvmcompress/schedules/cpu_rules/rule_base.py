"""Base class of the CPU schedule rules: dlight's ScheduleRule, restricted to LLVM targets; and the guard that
turns a rule's failure into a pass."""

from __future__ import annotations

import logging

from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

logger = logging.getLogger(__name__)


class CPURule(ScheduleRule):
    """A dlight ScheduleRule that applies only to `llvm` targets; apply() returns None to pass."""

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"


class GuardedRule(ScheduleRule):
    """`rule`, with any error it raises turned into "pass" (None), so that the next rule is tried.

    Rules are written for the PrimFuncs that legalization usually makes. Others reach them too: extern calls
    with no root block (TopK, CumSum, ScatterElements through `call_packed`), rank-0 buffers, zero-size loops
    (whose fuse divides by zero). A schedule rule is an optimization, so its failure must never fail the build:
    when every rule passes, the PrimFunc stays unscheduled, which LLVM compiles as it is."""

    def __init__(self, rule: ScheduleRule):
        self.rule = rule

    def is_target_available(self, target: Target) -> bool:
        return self.rule.is_target_available(target)

    def apply(self, func, target: Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception as err:  # noqa: BLE001 - ScheduleError, InternalError, IndexError, ...: all mean "pass"
            logger.debug("schedule rule %s passed on a PrimFunc it failed on: %s: %s", type(self.rule).__name__,
                         type(err).__name__, str(err).strip().splitlines()[-1:] or "")
            return None


def guarded(*rules: ScheduleRule) -> list[GuardedRule]:
    """`rules`, each wrapped in a GuardedRule, in the same order."""
    return [GuardedRule(rule) for rule in rules]
