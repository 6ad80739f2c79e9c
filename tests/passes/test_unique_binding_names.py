import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.unique_binding_names import UniqueBindingNames


def _names(mod):
    return [b.var.name for block in mod["main"].body.blocks for b in block.bindings]


def _module_with_duplicate_names():
    """x -> lv = x + x -> lv = lv * lv -> lv = lv - lv (three bindings all named "lv", as TVM's ONNX importer
    can produce). BlockBuilder would rename them, so the vars are built by hand."""
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    ty = relax.TensorType((2,), "float32")
    a, b, c = relax.DataflowVar("lv", ty), relax.DataflowVar("lv", ty), relax.Var("lv", ty)
    block = relax.DataflowBlock(
        [
            relax.VarBinding(a, relax.op.add(x, x)),
            relax.VarBinding(b, relax.op.multiply(a, a)),
            relax.VarBinding(c, relax.op.subtract(b, a)),
        ]
    )
    func = relax.Function([x], relax.SeqExpr([block], c), ty)
    return relax.transform.Normalize()(tvm.IRModule({"main": func}))


def test_duplicates_get_printer_suffixes():
    mod = _module_with_duplicate_names()
    assert _names(mod) == ["lv", "lv", "lv"]
    after = UniqueBindingNames()(mod)
    assert _names(after) == ["lv", "lv_1", "lv_2"]
    tvm.ir.assert_structural_equal(after, mod)  # var names are not structure


def test_unique_module_is_returned_unchanged():
    @I.ir_module
    class Unique:
        @R.function
        def main(x: R.Tensor((2,), "float32")) -> R.Tensor((2,), "float32"):
            with R.dataflow():
                y = R.add(x, x)
                R.output(y)
            return y

    assert UniqueBindingNames()(Unique).same_as(Unique)
