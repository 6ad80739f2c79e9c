"""Peak activation memory, read from TVM's static memory plan of the module the build actually compiles.

What it counts (one inference, in bytes):
- planned storage: Relax `StaticPlanBlockMemory` turns every intermediate tensor into an
  `R.memory.alloc_storage` of a fixed size and lets tensors whose lifetimes do not overlap share one. The VM
  allocates each storage once per call, so the sum of their sizes is what the intermediates need.
- outputs: tensors the function returns are not planned (the caller owns them); they are
  `R.builtin.alloc_tensor` calls of known shape.
- workspace: scratch buffers a kernel allocates inside itself (packed tiles, pooling accumulators), as
  `tvm.s_tir.analysis.calculate_allocated_bytes` reports them after `tirx.FlattenBuffer`. Kernels run one at a
  time, so the largest kernel's scratch counts, not the sum.

peak_activation_bytes = planned storage + outputs + workspace. Not counted: the weights (constants: they are
the "weights" and "flash" numbers), the caller's input tensors, and the runtime's own heap.

The plan is captured by a `PassInstrument` during `tvm.compile`, so it is the plan of the real build (tuned or
not), without running the pipeline a second time.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import tvm
from tvm import relax

_PLAN_PASS = "StaticPlanBlockMemory"
_FLAT_TIR_PASS = "tirx.FlattenBuffer"
_ALLOC_STORAGE = "relax.memory.alloc_storage"
_ALLOC_TENSOR = "relax.builtin.alloc_tensor"


@dataclass(frozen=True)
class MemoryPlan:
    planned_storage_bytes: int
    storages: int  # how many alloc_storage the plan made (tensors sharing one count once)
    output_bytes: int
    workspace_bytes: int  # the largest single kernel's scratch buffers

    @property
    def peak_activation_bytes(self) -> int:
        return self.planned_storage_bytes + self.output_bytes + self.workspace_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "peak_activation_bytes": self.peak_activation_bytes}


class DynamicShapeError(ValueError):
    """The plan holds a storage whose size is only known at run time."""


def _int(expr: Any, upper: dict[str, int] | None = None) -> int:
    """A size as a number; a symbolic one (dynamic shapes) at its symbols' upper bounds, `upper` by name (sizes
    grow with their dims, so that is the largest shape's size)."""
    if isinstance(expr, tvm.tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, int):
        return expr
    free = tvm.tirx.analysis.undefined_vars(expr) if upper else []
    if free and all(var.name in upper for var in free):
        from tvm.sym.analyzer import Analyzer

        analyzer = Analyzer()
        for var in free:
            analyzer.bind(var, tvm.tirx.const(upper[var.name], "int64"))
        bound = analyzer.simplify(expr)
        if isinstance(bound, tvm.tirx.IntImm):
            return int(bound.value)
    raise DynamicShapeError(f"size {expr} is not a constant")


def _dtype_bytes(dtype: str) -> int:
    dt = tvm.DataType(str(dtype))
    return (dt.bits * dt.lanes + 7) // 8


def _relax_allocations(func: relax.Function) -> tuple[int, int, int]:
    """(planned storage bytes, storage count, unplanned alloc_tensor bytes) of one planned Relax function."""
    calls: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        # Only collect here: an exception raised inside the FFI callback would come back as a RuntimeError.
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            if expr.op.name in (_ALLOC_STORAGE, _ALLOC_TENSOR):
                calls.append(expr)

    relax.analysis.post_order_visit(func, visit)
    upper = {str(k): int(v) for k, v in (func.attrs or {}).get("tir_var_upper_bound", {}).items()}
    storage_bytes, storages, tensor_bytes = 0, 0, 0
    for call in calls:
        if call.op.name == _ALLOC_STORAGE:
            # alloc_storage(R.shape([bytes]), virtual_device_index, storage_scope, dtype)
            storage_bytes += _int(call.args[0].values[0], upper)
            storages += 1
        else:
            # builtin.alloc_tensor(R.shape(dims), R.dtype(d), runtime_device_index, storage_scope)
            count = 1
            for dim in call.args[0].values:
                count *= _int(dim, upper)
            tensor_bytes += count * _dtype_bytes(call.args[1].value)
    return storage_bytes, storages, tensor_bytes


def plan_of(planned: tvm.IRModule, flat_tir: tvm.IRModule | None) -> MemoryPlan:
    """The plan of `planned` (the module right after StaticPlanBlockMemory) and, for the workspace, the
    flattened TIR of the same build. Raises DynamicShapeError when a size is symbolic."""
    storage_bytes = storages = output_bytes = 0
    upper: dict[str, int] = {}
    for _gvar, func in planned.functions_items():
        if isinstance(func, relax.Function):
            upper.update({str(k): int(v) for k, v in (func.attrs or {}).get("tir_var_upper_bound", {}).items()})
        if isinstance(func, relax.Function):
            s, n, o = _relax_allocations(func)
            storage_bytes, storages, output_bytes = storage_bytes + s, storages + n, output_bytes + o
    workspace = 0
    if flat_tir is not None:
        from tvm.s_tir.analysis import calculate_allocated_bytes

        for scopes in calculate_allocated_bytes(flat_tir).values():
            # global/local: heap workspace or stack on a CPU. GPU shared/warp memory is on-chip, not RAM.
            # A kernel of dynamic shapes names the symbols as main does: sized at their upper bounds.
            ram = sum(_int(v, upper) for scope, v in scopes.items() if str(scope).startswith(("global", "local")))
            workspace = max(workspace, ram)
    return MemoryPlan(storage_bytes, storages, output_bytes, workspace)


class MemoryPlanRecorder:
    """Holds the modules the instrument saw; `plan()` after the build."""

    def __init__(self):
        self.planned: tvm.IRModule | None = None
        self.flat_tir: tvm.IRModule | None = None

    def plan(self) -> MemoryPlan | None:
        """None if the build never ran StaticPlanBlockMemory (a pipeline without memory planning)."""
        if self.planned is None:
            return None
        return plan_of(self.planned, self.flat_tir)


@contextlib.contextmanager
def record_memory_plan() -> Iterator[MemoryPlanRecorder]:
    """Within this block, every `tvm.compile` reports its static memory plan to the yielded recorder; the last
    build wins (tuning's candidate builds come first and do not plan Relax memory).

    The current PassContext's settings are kept: only the instrument is added.
    """
    recorder = MemoryPlanRecorder()

    @tvm.instrument.pass_instrument
    class _Capture:
        def run_after_pass(self, mod, info):
            if info.name == _PLAN_PASS:
                recorder.planned = mod
            elif info.name == _FLAT_TIR_PASS:
                recorder.flat_tir = mod

    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(
        opt_level=current.opt_level,
        required_pass=list(current.required_pass),
        disabled_pass=list(current.disabled_pass),
        instruments=[*current.instruments, _Capture()],
        config=dict(current.config),
    ):
        yield recorder
