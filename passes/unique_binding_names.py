"""UniqueBindingNames: give every parameter and binding of a function a distinct name.

TVM's ONNX importer reuses names (two different bindings can both be called `lv9`), and the quantization
passes key calibration tables, exclusions and records by binding name. Duplicates get the suffix that TVMScript
printing shows for them (`lv9_1`, `lv9_2`, ...), so printed IR and table keys agree.

Pre: none. Post: within each Relax function, no two vars share a name; the module is otherwise unchanged
(structurally equal up to var names).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

__all__ = ["UniqueBindingNames"]


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.UniqueBindingNames")
class UniqueBindingNames:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter = _Renamer(mod, {p.name for p in func.params})
                mod = _replaced(mod, gvar, rewriter.visit_expr(func)) if rewriter.needs_renaming(func) else mod
        return mod


def _replaced(mod, gvar, func):
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod[gvar] = func
    return new_mod


@mutator
class _Renamer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, taken: set[str]):
        super().__init__(mod)
        self.taken = set(taken)

    def needs_renaming(self, func: relax.Function) -> bool:
        names = [p.name for p in func.params]
        for block in func.body.blocks:
            names.extend(binding.var.name for binding in block.bindings)
        return len(names) != len(set(names))

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = binding.var.name
        if name not in self.taken:
            self.taken.add(name)
            return super().visit_var_binding_(binding)
        suffix = 1
        while f"{name}_{suffix}" in self.taken:
            suffix += 1
        new_name = f"{name}_{suffix}"
        self.taken.add(new_name)
        value = self.visit_expr(binding.value)
        var_class = relax.DataflowVar if isinstance(binding.var, relax.DataflowVar) else relax.Var
        new_var = var_class(new_name, binding.var.ty)
        self.builder_.emit_normalized(relax.VarBinding(new_var, value))
        self.set_var_remap(binding.var, new_var)
