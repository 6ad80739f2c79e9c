"""The activation arena over time: which intermediate tensors are alive at each kernel call, and where the peak is.

Read from the same module as memory_plan.py (the main function right after StaticPlanBlockMemory, captured during
the real build). At that point every intermediate is an `R.memory.alloc_tensor` carved out of a planned storage
(or an `R.builtin.alloc_tensor` for a returned tensor) and every kernel is a direct call `kernel(inputs..., outputs)`.

A tensor is alive from the first kernel call that uses it (its writer) to the last one that reads it; the function's
return value stays alive to the end. Bindings that only rename (`lv = alloc`), group (tuples, tuple items) or view
(`R.reshape`, which the VM lowers to a view of the same storage) make aliases, not new tensors.

`live_bytes` per step is the sum of the tensors alive at that call. It can be below the planned storage total
(memory_plan.py), because a storage keeps the size of the largest tensor ever placed in it.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

_ALLOC_STORAGE_TENSOR = "relax.memory.alloc_tensor"  # (storage, offset, shape, dtype, ...)
_ALLOC_TENSOR = "relax.builtin.alloc_tensor"  # (shape, dtype, device index, scope)
# The timeline keeps the largest tensors when a model has more: a chart of thousands of rows says nothing.
MAX_TENSORS = 60


def _const_int(expr: Any) -> int | None:
    return int(expr.value) if isinstance(expr, tvm.tirx.IntImm) else None


def _tensor_bytes(shape: relax.ShapeExpr, dtype: str) -> int | None:
    count = 1
    for dim in shape.values:
        value = _const_int(dim)
        if value is None:
            return None
        count *= value
    dt = tvm.DataType(str(dtype))
    return count * ((dt.bits * dt.lanes + 7) // 8)


def _vars_in(expr: relax.Expr) -> list[relax.Var]:
    found: list[relax.Var] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.Var):
            found.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return found


def timeline_of(planned: tvm.IRModule | None) -> dict[str, Any] | None:
    """{"steps": [{"kernel", "live_bytes"}], "tensors": [{"name", "bytes", "storage", "first", "last"}],
    "peak_step", "peak_kernel", "peak_live_bytes"} of `planned`'s main function, or None when there is no plan or a
    size is only known at run time."""
    if planned is None:
        return None
    funcs = {gvar.name_hint: func for gvar, func in planned.functions_items() if isinstance(func, relax.Function)}
    func = funcs.get("main")
    if func is None or not isinstance(func.body, relax.SeqExpr):
        return None
    storage_names: dict[str, str] = {}
    roots: dict[str, set[str]] = {}  # var name -> the allocations it stands for
    tensors: dict[str, dict[str, Any]] = {}
    steps: list[dict[str, Any]] = []
    uses: list[set[str]] = []
    fields: dict[str, list[set[str]]] = {}  # tuple var name -> the allocations of each field

    def roots_of(expr: relax.Expr) -> set[str]:
        out: set[str] = set()
        for var in _vars_in(expr):
            out |= roots.get(var.name, set())
        return out

    for block in func.body.blocks:
        for binding in block.bindings:
            name, value = binding.var.name, binding.value
            op = value.op if isinstance(value, relax.Call) else None
            if isinstance(op, tvm.ir.Op) and op.name == "relax.memory.alloc_storage":
                storage_names[name] = f"storage{len(storage_names)}"
            elif isinstance(op, tvm.ir.Op) and op.name in (_ALLOC_STORAGE_TENSOR, _ALLOC_TENSOR):
                planned_in = op.name == _ALLOC_STORAGE_TENSOR
                shape, dtype = (value.args[2], value.args[3]) if planned_in else (value.args[0], value.args[1])
                size = _tensor_bytes(shape, dtype.value)
                if size is None:
                    return None
                storage = storage_names.get(value.args[0].name, "?") if planned_in else "output"
                tensors[name] = {"name": name, "bytes": size, "storage": storage, "first": None, "last": None}
                roots[name] = {name}
            elif isinstance(op, relax.GlobalVar) or isinstance(op, relax.ExternFunc):
                used = set()
                for arg in value.args:
                    used |= roots_of(arg)
                kernel = op.name_hint if isinstance(op, relax.GlobalVar) else str(op.global_symbol)
                steps.append({"kernel": kernel})
                uses.append(used)
                roots[name] = used  # a kernel returning a value (rare here) aliases its outputs
            elif isinstance(value, relax.Tuple):
                fields[name] = [roots_of(field) for field in value.fields]
                roots[name] = set().union(*fields[name]) if fields[name] else set()
            elif isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var) \
                    and value.tuple_value.name in fields:
                # lv13 = lv12[0] stands for field 0 only: the other outputs of batch_norm die at its call.
                roots[name] = fields[value.tuple_value.name][value.index]
            else:
                roots[name] = roots_of(value)
    if not steps:
        return None
    for index, used in enumerate(uses):
        for alloc in used:
            entry = tensors[alloc]
            entry["first"] = index if entry["first"] is None else entry["first"]
            entry["last"] = index
    returned = roots_of(func.body.body)
    for alloc in returned:
        if tensors[alloc]["first"] is not None:
            tensors[alloc]["last"] = len(steps) - 1
    live = [t for t in tensors.values() if t["first"] is not None]
    for index, step in enumerate(steps):
        step["live_bytes"] = sum(t["bytes"] for t in live if t["first"] <= index <= t["last"])
    peak = max(range(len(steps)), key=lambda i: steps[i]["live_bytes"])
    shown = sorted(live, key=lambda t: -t["bytes"])[:MAX_TENSORS]
    shown.sort(key=lambda t: (t["first"], t["last"]))
    return {
        "steps": steps,
        "tensors": shown,
        "tensors_total": len(live),
        "peak_step": peak,
        "peak_kernel": steps[peak]["kernel"],
        "peak_live_bytes": steps[peak]["live_bytes"],
    }
