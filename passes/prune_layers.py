"""PruneLayers: remove whole residual blocks, replacing `add(branch, skip)` by `skip`.

A residual block is an `add` of two tensors of the same shape where one operand (the skip) is an ancestor of
the other (the residual branch): x + f(x). Removing it leaves x, and dead-code elimination then drops f's
layers. `choose_blocks` ranks the blocks by how much the branch contributes on calibration data,
mean |f(x)| / mean |x|, and returns the K smallest.

Pre: binding names are unique, weights bound. Post: each named add is gone, its uses read the skip input; the
branch's bindings are removed. Adds whose result is a function output are not candidates (the skip may be a
dataflow var that cannot leave the block).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

__all__ = ["PruneLayers", "find_residual_blocks", "choose_blocks"]


def find_residual_blocks(mod: tvm.IRModule) -> dict[str, tuple[str, str]]:
    """{add binding: (branch var, skip var)} of every residual add in `main`, in program order."""
    ancestors: dict[str, set[str]] = {p.name: set() for p in mod["main"].params}
    blocks = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value, name = binding.value, binding.var.name
            args = [a for a in getattr(value, "args", []) if isinstance(a, relax.Var)]
            ancestors[name] = set().union(*(ancestors.get(a.name, set()) | {a.name} for a in args)) if args else set()
            if (not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op)
                    or value.op.name != "relax.add" or len(args) != 2
                    or not isinstance(binding.var, relax.DataflowVar)):
                continue
            lhs, rhs = value.args
            if [int(d) for d in lhs.ty.shape.values] != [int(d) for d in rhs.ty.shape.values]:
                continue
            if rhs.name in ancestors[lhs.name]:
                blocks[name] = (lhs.name, rhs.name)
            elif lhs.name in ancestors[rhs.name]:
                blocks[name] = (rhs.name, lhs.name)
    return blocks


def choose_blocks(mod: tvm.IRModule, count: int, data: Sequence[Mapping[str, np.ndarray]]) -> list[str]:
    """The `count` residual adds whose branch is smallest relative to its skip on `data`."""
    from ..errors import TvmcompressError
    from .reconstruct import collect_tensors

    blocks = find_residual_blocks(mod)
    if count > len(blocks):
        raise TvmcompressError(f"--prune layer:{count}: the model has {len(blocks)} removable residual block(s)")
    names = sorted({v for pair in blocks.values() for v in pair})
    values = collect_tensors(mod, names, data)
    ratio = {add: float(np.abs(values[b]).mean() / max(np.abs(values[s]).mean(), 1e-12))
             for add, (b, s) in blocks.items()}
    return sorted(sorted(ratio, key=ratio.get)[:count], key=list(blocks).index)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PruneLayers")
class PruneLayers:
    def __init__(self, blocks: Sequence[str]):
        self.blocks = tuple(blocks)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.blocks:
            return mod
        found = find_residual_blocks(mod)
        missing = [b for b in self.blocks if b not in found]
        if missing:
            raise ValueError(f"PruneLayers: {missing} are not residual adds of main")
        rewriter = _BlockRemover(mod, {b: found[b][1] for b in self.blocks})
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


@mutator
class _BlockRemover(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, skips: dict[str, str]):
        super().__init__(mod)
        self.skips = skips

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        skip = self.skips.get(binding.var.name)
        if skip is None:
            return super().visit_var_binding_(binding)
        lhs, rhs = binding.value.args
        self.set_var_remap(binding.var, self.visit_expr(lhs if lhs.name == skip else rhs))
