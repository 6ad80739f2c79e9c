import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.quantize_weight_only import QuantizeWeightOnly, pack_int4, unpack_int4
from tvmcompress.passes.quantize_weights import quantize_per_channel

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 6)).astype(np.float32)
CW = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
DW = RNG.normal(size=(3, 1, 3, 3)).astype(np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((2, 16), "float32"), img: R.Tensor((1, 3, 6, 6), "float32")):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            c = R.nn.conv2d(img, R.const(CW), padding=1, strides=2)
            out = (y, c)
            R.output(out)
        return out


def _dequantized(weight, axis, bits):
    w_q, scale = quantize_per_channel(weight, axis, bits=bits)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return w_q.astype(np.float32) * scale.reshape(shape)


def test_int4_packing_round_trips():
    values = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    packed = pack_int4(values)
    assert packed.dtype == np.uint8 and packed.size == 8 and packed[0] == ((-7 & 0xF) << 4 | (-8 & 0xF))
    np.testing.assert_array_equal(unpack_int4(packed, values.shape), values)
    odd = np.array([3, -1, 7], np.int8)  # an odd count pads the last byte
    np.testing.assert_array_equal(unpack_int4(pack_int4(odd), odd.shape), odd)


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_computes_with_the_dequantized_weights(bits):
    after = QuantizeWeightOnly(bits)(Before)
    # main stores only integer weights: int8 tensors of the weights' shapes, or int4 packed two per byte.
    constants = {}
    relax.analysis.post_order_visit(
        after["main"], lambda e: constants.setdefault(str(e.value.dtype), []).append(e.value.numpy().size)
        if isinstance(e, tvm.ir.expr.GenericConst) else None)
    assert "float32" in constants and sorted(constants["float32"]) == [4, 6]  # per-channel scales only
    stored = constants["int8" if bits == 8 else "uint8"]
    assert sorted(stored) == ([W.size, CW.size] if bits == 8 else [W.size // 2, CW.size // 2])
    x = RNG.normal(size=(2, 16)).astype(np.float32)
    img = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    y, c = run(after, x, img)
    # Reference: the float op on the dequantized weights; the kernel differs only by where the per-channel
    # scale is applied (after the sum instead of on each weight), a few float32 ulps.
    np.testing.assert_allclose(y, x @ _dequantized(W, 1, bits), rtol=1e-5, atol=1e-5)

    @I.ir_module
    class Reference:
        @R.function
        def main(img: R.Tensor((1, 3, 6, 6), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(img, R.const(_dequantized(CW, 0, bits)), padding=1, strides=2)
                R.output(c)
            return c

    np.testing.assert_allclose(c, run(Reference, img), rtol=1e-5, atol=1e-5)


def test_weights_survive_constant_folding():
    # The build pipelines run FoldConstant; a dequantize of a constant weight would be folded back to float32.
    folded = relax.transform.FoldConstant()(QuantizeWeightOnly(4)(Before))
    dtypes = set()
    relax.analysis.post_order_visit(
        folded["main"], lambda e: dtypes.add(str(e.value.dtype)) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    assert dtypes == {"uint8", "float32"}


def test_excluded_and_grouped_conv_are_left_alone():
    @I.ir_module
    class Depthwise:
        @R.function
        def main(img: R.Tensor((1, 3, 6, 6), "float32")) -> R.Tensor((1, 3, 6, 6), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(img, R.const(DW), padding=1, groups=3)
                R.output(c)
            return c

    tvm.ir.assert_structural_equal(QuantizeWeightOnly(4)(Depthwise), Depthwise)
    tvm.ir.assert_structural_equal(QuantizeWeightOnly(8, exclude=("matmul_0", "c"))(Before), Before)


def test_bits_other_than_8_4_2_or_1_are_rejected():
    with pytest.raises(ValueError, match="8, 4, 2 \\(ternary\\) or 1 \\(binary\\) bits"):
        QuantizeWeightOnly(3)
