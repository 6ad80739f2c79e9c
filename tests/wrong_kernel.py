"""A deliberately wrong kernel for tests of verification and `tvmcompress debug` (issue 17).

`write_cli(directory)` writes a script that runs the `tvmcompress` CLI with one fault injected: a Relax pass at
the head of the CPU pipeline turns every `R.sigmoid` into `R.tanh`, as a broken schedule or fusion would compute
a wrong op. The patch lives only in that subprocess; nothing in the package or the environment changes.
`gated_model()` is a small CNN with one Sigmoid node (`gate`) in the middle, so exactly one node is wrong.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WRONG_NODE = "gate"

_SCRIPT = '''\
import sys

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

import tvmcompress.build as build
from tvmcompress.cli import main

ONLY_WITH_WINOGRAD = {only_with_winograd}


@mutator
class _SigmoidToTanh(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.sigmoid":
            return relax.op.tanh(call.args[0])
        return call


@tvm.transform.module_pass(opt_level=0, name="test.WrongKernel")
def wrong_kernel(mod, _ctx):
    rewriter = _SigmoidToTanh(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


_original = build.relax_pipeline_for


def _patched(target, tuned=None, winograd=True):
    pipeline, name = _original(target, tuned, winograd)
    if ONLY_WITH_WINOGRAD and not winograd:
        return pipeline, name
    return tvm.transform.Sequential([wrong_kernel, pipeline]), name


build.relax_pipeline_for = _patched
sys.exit(main(sys.argv[1:]))
'''


def write_cli(directory, only_with_winograd: bool = False) -> list[str]:
    """The command (argv prefix) of the CLI with the wrong kernel injected; `only_with_winograd`: only into
    builds with Winograd on, as a fault in the Winograd convolutions' fusion would be."""
    path = os.path.join(os.fspath(directory), "tvmcompress_wrong_kernel.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_SCRIPT.replace("{only_with_winograd}", repr(bool(only_with_winograd))))
    return [sys.executable, path]


def gated_model(seed: int = 0) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> Relu -> Conv -> Sigmoid (`gate`) -> Mul -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["g"], name=WRONG_NODE),
        helper.make_node("Mul", ["g", "r1"], ["m"], name="mul"),
        helper.make_node("GlobalAveragePool", ["m"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["scores"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "gated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 5])],
        [init("w1", (8, 3, 3, 3)), init("b1", (8,)), init("w2", (8, 8, 3, 3)), init("b2", (8,)),
         init("wf", (5, 8), 1.0), init("bf", (5,))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model
