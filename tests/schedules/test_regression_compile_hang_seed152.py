"""Regression (fuzz seed 152): Concat -> Tanh -> Tanh -> Exp -> Transpose never finished compiling.

FastMathTransform's tanh reads its operand ~27 times; the Injective rule inlined every block of the fused PrimFunc,
so the inner tanh (and the concat under it) was copied into each of those reads: a ~10^5-node expression tree
that TVM's lowering and LLVM did not finish in minutes. The rule now keeps a producer as its own buffer when
inlining it would grow a block past a size bound (injective._MAX_INLINED_NODES).

The compile runs in a subprocess with a timeout so that a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

TIMEOUT_S = 120  # the fixed compile takes a few seconds; the broken one ran > 4 CPU-minutes


def _tanh_tanh_exp_model() -> onnx.ModelProto:
    """The fused part of seed 152: Concat(x, c, x) on axis 2, Tanh, Tanh, Exp, Transpose [2,0,1,3]."""
    rng = np.random.default_rng(152)
    const = helper.make_tensor("c", TensorProto.FLOAT, [1, 5, 1, 5], rng.standard_normal(25).astype(np.float32))
    nodes = [
        helper.make_node("Concat", ["x", "c", "x"], ["cat"], axis=2),
        helper.make_node("Tanh", ["cat"], ["t1"]),
        helper.make_node("Tanh", ["t1"], ["t2"]),
        helper.make_node("Exp", ["t2"], ["e"]),
        helper.make_node("Transpose", ["e"], ["y"], perm=[2, 0, 1, 3]),
    ]
    graph = helper.make_graph(
        nodes, "seed152", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 12, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [25, 1, 5, 5])], [const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_seed152_fused_tanh_chain_compiles_in_bounded_time_and_matches_ort(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(_tanh_tanh_exp_model(), model_path)
    x = np.random.default_rng(0).standard_normal((1, 5, 12, 5)).astype(np.float32) * 2
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, tvmcompress
        art = tvmcompress.compile({str(model_path)!r}, "host", output={str(tmp_path / "out")!r})
        np.save({str(tmp_path / "y.npy")!r}, art.run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"])
    """)
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=TIMEOUT_S, capture_output=True)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"compile did not finish in {TIMEOUT_S} s (the seed-152 hang is back)") from None
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-5)

