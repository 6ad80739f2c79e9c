import numpy as np
import tvm
from quant_helpers import run
from sparse_helpers import import_prepared, run_ort
from onnx import TensorProto, helper, numpy_helper
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvmcompress.passes.fold_channel_affine import FoldChannelAffine

W = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # matmul [K=2, N=2]
B = np.array([1.0, -1.0], np.float32)
S = np.array([2.0, 0.5], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((3, 2), "float32")) -> R.Tensor((3, 2), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            z = R.add(y, R.const(B))
            u = R.multiply(z, R.const(S))
            v = R.subtract(u, R.const(1.0, "float32"))
            R.output(v)
        return v


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((3, 2), "float32")) -> R.Tensor((3, 2), "float32"):
        with R.dataflow():
            # W * S per output column; bias (B * S) - 1 = [1, -1.5].
            y = R.matmul(x, R.const(np.array([[2.0, 1.0], [6.0, 2.0]], np.float32)))
            v = R.add(y, R.const(np.array([1.0, -1.5], np.float32)))
            R.output(v)
        return v


def test_fold_channel_affine_folds_scale_and_shifts():
    tvm.ir.assert_structural_equal(FoldChannelAffine()(Before), Expected)


def test_fold_stops_at_reversed_subtract_and_shared_values():
    @I.ir_module
    class Reversed:
        @R.function
        def main(x: R.Tensor((3, 2), "float32")) -> R.Tensor((3, 2), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(W))
                z = R.subtract(R.const(B), y)
                R.output(z)
            return z

    @I.ir_module
    class Shared:
        @R.function
        def main(x: R.Tensor((3, 2), "float32")) -> R.Tensor((3, 2), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(W))
                z = R.add(y, R.const(B))
                w = R.add(y, z)
                R.output(w)
            return w

    tvm.ir.assert_structural_equal(FoldChannelAffine()(Reversed), Reversed)
    tvm.ir.assert_structural_equal(FoldChannelAffine()(Shared), Shared)


def test_folded_conv_batchnorm_matches_ort():
    rng = np.random.default_rng(0)
    c = 4
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in (
        (rng.normal(size=(c, 3, 3, 3)), "W"), (rng.normal(size=c), "b"), (rng.uniform(0.5, 2, c), "gamma"),
        (rng.normal(size=c), "beta"), (rng.normal(size=c), "mean"), (rng.uniform(0.5, 2, c), "var"))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "b"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["z"])],
        "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, c, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folded = FoldChannelAffine()(import_prepared(model))
    # One weight and one bias left: the BN's four vectors and the conv bias are folded.
    consts = []
    tvm.relax.analysis.post_order_visit(folded["main"], lambda e: consts.append(e) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    assert sorted(tuple(e.value.numpy().shape) for e in consts) == [(1, c, 1, 1), (c, 3, 3, 3)]
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    # float32 products reassociated ((conv + b - mean) / sd * gamma vs conv with W * gamma / sd): ~1e-6.
    np.testing.assert_allclose(run(folded, x), run_ort(model, x), rtol=1e-5, atol=1e-5)


def test_fold_channel_affine_with_a_symbolic_batch():
    # Dynamic shapes (issue 21): only the channel dim must be static; the batch stays symbolic.
    @I.ir_module
    class Dynamic:
        @R.function
        def main(x: R.Tensor(("n", 2), "float32")) -> R.Tensor(("n", 2), "float32"):
            n = T.int64()
            with R.dataflow():
                y: R.Tensor((n, 2), "float32") = R.matmul(x, R.const(W))
                z: R.Tensor((n, 2), "float32") = R.add(y, R.const(B))
                u: R.Tensor((n, 2), "float32") = R.multiply(z, R.const(S))
                v: R.Tensor((n, 2), "float32") = R.subtract(u, R.const(1.0, "float32"))
                R.output(v)
            return v

    @I.ir_module
    class DynamicExpected:
        @R.function
        def main(x: R.Tensor(("n", 2), "float32")) -> R.Tensor(("n", 2), "float32"):
            n = T.int64()
            with R.dataflow():
                y: R.Tensor((n, 2), "float32") = R.matmul(x, R.const(np.array([[2.0, 1.0], [6.0, 2.0]], np.float32)))
                v: R.Tensor((n, 2), "float32") = R.add(y, R.const(np.array([1.0, -1.5], np.float32)))
                R.output(v)
            return v

    tvm.ir.assert_structural_equal(FoldChannelAffine()(Dynamic), DynamicExpected)
