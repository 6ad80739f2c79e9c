"""Facts about a Relax module that the manifest reports: how many bytes of weights it carries."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import GenericConst  # 0.27: a Relax tensor constant; its tensor is `.value`


def constant_bytes(mod: tvm.IRModule) -> int:
    """Bytes of all tensor constants bound in the module's Relax functions (each distinct constant once)."""
    seen: dict[GenericConst, int] = {}  # TVM objects hash by identity

    def visit(expr):
        if isinstance(expr, GenericConst) and hasattr(expr.value, "numpy"):
            seen.setdefault(expr, expr.value.numpy().nbytes)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(seen.values())
