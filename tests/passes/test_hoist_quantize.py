import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.hoist_quantize import HoistQuantize


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 8), "int8"):
        with R.dataflow():
            r = R.nn.relu(x)
            p = R.nn.max_pool2d(r, pool_size=[2, 2], strides=[2, 2])
            f = R.reshape(p, R.shape([1, 8]))
            q = R.quantize(f, R.const(0.1, "float32"), R.const(-5, "int8"), axis=-1, out_dtype="int8")
            R.output(q)
        return q


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 8), "int8"):
        with R.dataflow():
            q = R.quantize(x, R.const(0.1, "float32"), R.const(-5, "int8"), axis=-1, out_dtype="int8")
            r = R.maximum(q, R.const(-5, "int8"))
            p = R.nn.max_pool2d(r, pool_size=[2, 2], strides=[2, 2])
            f = R.reshape(p, R.shape([1, 8]))
            R.output(f)
        return f


def test_hoist_quantize_through_relu_pool_reshape():
    tvm.ir.assert_structural_equal(HoistQuantize()(Before), Expected)


def test_hoist_quantize_is_bit_exact():
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32) * 3
    np.testing.assert_array_equal(run(HoistQuantize()(Before), x), run(Before, x))


def test_hoist_quantize_drops_relu_when_zero_point_is_lowest_code():
    @I.ir_module
    class ReluAtMin:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                r = R.nn.relu(x)
                q = R.quantize(r, R.const(0.1, "float32"), R.const(-128, "int8"), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    @I.ir_module
    class Hoisted:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                q = R.quantize(x, R.const(0.1, "float32"), R.const(-128, "int8"), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    tvm.ir.assert_structural_equal(HoistQuantize()(ReluAtMin), Hoisted)


@I.ir_module
class AddThenPool:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 2, 2, 2), "int8"):
        with R.dataflow():
            p = R.nn.max_pool2d(x, pool_size=[2, 2], strides=[2, 2])
            y = R.add(p, p)
            q = R.quantize(y, R.const(0.1, "float32"), R.const(0, "int8"), axis=-1, out_dtype="int8")
            R.output(q)
        return q


@I.ir_module
class AvgPool:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 2, 2, 2), "int8"):
        with R.dataflow():
            y = R.nn.avg_pool2d(x, pool_size=[2, 2], strides=[2, 2])
            q = R.quantize(y, R.const(0.1, "float32"), R.const(0, "int8"), axis=-1, out_dtype="int8")
            R.output(q)
        return q


@pytest.mark.parametrize("mod", [AddThenPool, AvgPool], ids=["add", "avg_pool2d"])
def test_hoist_quantize_stops_at_inexact_ops(mod):
    tvm.ir.assert_structural_equal(HoistQuantize()(mod), mod)


def test_quantize_of_dequantize_with_equal_params_is_dropped():
    # A pre-quantized model's DQ -> max_pool -> Q: after the hoist, Q(DQ(q)) with the same params is q itself.
    @I.ir_module
    class Pool:
        @R.function
        def main(q: R.Tensor((1, 2, 4, 4), "uint8")) -> R.Tuple(R.Tensor((1, 2, 2, 2), "uint8"), R.Tensor((1, 2, 4, 4), "uint8")):
            with R.dataflow():
                d = R.dequantize(q, R.const(0.1, "float32"), R.const(7, "uint8"), axis=1, out_dtype="float32")
                p = R.nn.max_pool2d(d, pool_size=[2, 2], strides=[2, 2])
                same = R.quantize(p, R.const(0.1, "float32"), R.const(7, "uint8"), axis=1, out_dtype="uint8")
                other = R.quantize(d, R.const(0.2, "float32"), R.const(7, "uint8"), axis=1, out_dtype="uint8")
                out = (same, other)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(q: R.Tensor((1, 2, 4, 4), "uint8")) -> R.Tuple(R.Tensor((1, 2, 2, 2), "uint8"), R.Tensor((1, 2, 4, 4), "uint8")):
            with R.dataflow():
                d = R.dequantize(q, R.const(0.1, "float32"), R.const(7, "uint8"), axis=1, out_dtype="float32")
                p = R.nn.max_pool2d(q, pool_size=[2, 2], strides=[2, 2])
                other = R.quantize(d, R.const(0.2, "float32"), R.const(7, "uint8"), axis=1, out_dtype="uint8")
                out = (p, other)
                R.output(out)
            return out

    after = HoistQuantize()(Pool)
    tvm.ir.assert_structural_equal(after, Expected)
    q = np.random.default_rng(4).integers(0, 256, (1, 2, 4, 4)).astype(np.uint8)
    for got, want in zip(run(after, q), run(Pool, q)):
        np.testing.assert_array_equal(got, want)


@I.ir_module
class Relu6:
    @R.function
    def main(x: R.Tensor((1, 4, 4, 8), "float32")) -> R.Tensor((1, 4, 4, 8), "uint8"):
        with R.dataflow():
            low = R.maximum(x, R.const(0.5, "float32"))
            high = R.minimum(low, R.const(6.0, "float32"))
            q = R.quantize(high, R.const(0.02, "float32"), R.const(10, "uint8"), axis=-1, out_dtype="uint8")
            R.output(q)
        return q


def test_hoist_quantize_through_clip_quantizes_the_bounds():
    # 0.5 / 0.02 + 10 = 35; 6 / 0.02 + 10 = 310 saturates to 255, the highest code: that minimum is dropped.
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 4, 8), "float32")) -> R.Tensor((1, 4, 4, 8), "uint8"):
            with R.dataflow():
                q = R.quantize(x, R.const(0.02, "float32"), R.const(10, "uint8"), axis=-1, out_dtype="uint8")
                low = R.maximum(q, R.const(35, "uint8"))
                R.output(low)
            return low

    tvm.ir.assert_structural_equal(HoistQuantize()(Relu6), Expected)


def test_hoist_quantize_through_clip_is_bit_exact():
    # Values on and around the bounds, and on ties of the rounding (k + 0.5 steps).
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 7, (1, 4, 4, 8)).astype(np.float32)
    x.flat[:6] = [0.5, 0.49, 0.51, 6.0, 0.53, 0.57]
    np.testing.assert_array_equal(run(HoistQuantize()(Relu6), x), run(Relu6, x))


def test_hoist_quantize_through_clip_keeps_a_bound_inside_the_range():
    @I.ir_module
    class Narrow:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "int8"):
            with R.dataflow():
                c = R.minimum(x, R.const(1.0, "float32"))
                q = R.quantize(c, R.const(0.1, "float32"), R.const(0, "int8"), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    after = HoistQuantize()(Narrow)
    ops = [b.value.op.name for b in after["main"].body.blocks[0].bindings]
    assert ops == ["relax.quantize", "relax.minimum"]
    x = np.linspace(-20, 20, 16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_array_equal(run(after, x), run(Narrow, x))
