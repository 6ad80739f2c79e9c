"""`--quantize ternary-weight` / `binary-weight`: QuantizeWeightOnly at 2 and 1 bits stores packed codes (4 and 8
per byte) and a float alpha per channel, and computes what the float op computes on the projected weights."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.passes.quantize_weight_only import QuantizeWeightOnly
from tvmcompress.passes.reconstruct import ReplaceLayerWeights
from tvmcompress.passes.ternary_weights import binarize, ternarize

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 6)).astype(np.float32)
CW = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)


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


def _projected(weight, axis, bits):
    codes, alpha = (ternarize if bits == 2 else binarize)(weight, axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return codes.astype(np.float32) * alpha.reshape(shape)


@pytest.mark.parametrize("bits", [2, 1])
def test_ternary_and_binary_store_packed_codes_and_compute_with_them(bits):
    after = QuantizeWeightOnly(bits)(Before)
    constants = {}
    relax.analysis.post_order_visit(
        after["main"], lambda e: constants.setdefault(str(e.value.dtype), []).append(e.value.numpy().size)
        if isinstance(e, tvm.ir.expr.GenericConst) else None)
    assert sorted(constants["float32"]) == [4, 6]  # one alpha per output channel
    per_byte = 8 // bits
    assert sorted(constants["uint8"]) == sorted([-(-W.size // per_byte), -(-CW.size // per_byte)])
    x = RNG.normal(size=(2, 16)).astype(np.float32)
    img = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    y, c = run(after, x, img)
    # Reference: the float op on alpha * code; float32 sums in another order (tolerance ~1e-5 of |y|).
    np.testing.assert_allclose(y, x @ _projected(W, 1, bits), rtol=1e-5, atol=1e-5)
    reference = run(ReplaceLayerWeights({"c": _projected(CW, 0, bits)})(Before), x, img)[1]
    np.testing.assert_allclose(c, reference, rtol=1e-5, atol=1e-5)


def test_ternary_codes_are_idempotent_so_a_distilled_weight_is_stored_exactly():
    w = _projected(CW, 0, 2)
    codes, alpha = ternarize(w, 0)
    np.testing.assert_allclose(codes * alpha.reshape(-1, 1, 1, 1), w, rtol=1e-6)


def _constants(mod) -> list[np.ndarray]:
    found = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e.value.numpy())
        if isinstance(e, tvm.ir.expr.GenericConst) and e.value.numpy().ndim >= 1 else None)
    return found


@pytest.mark.parametrize("bits, floor", [(2, 12.0), (1, 24.0)])
def test_weights_file_of_ternary_and_binary_layers_is_12x_and_24x_smaller(tmp_path, bits, floor):
    """weights.bin (raw codec, its header and 64-byte alignment included) of a 512-512-512-10 MLP's constants,
    as the build lifts them, against fp32: 2-bit codes are 16x fewer bytes and 1-bit 32x, less the float
    alpha per channel and bias (the acceptance floors of issue 20)."""
    from tvmcompress.weights_file import write

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 512], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for n_out in (512, 512, 10):
                w = rng.normal(0, 0.05, (int(h.ty.shape[1]), n_out)).astype(np.float32)
                h = bb.emit(relax.op.add(relax.op.matmul(h, relax.const(w)), relax.const(np.zeros(n_out, np.float32))))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    dense = bb.get()
    write(tmp_path / "fp32.bin", _constants(dense))
    write(tmp_path / "low.bin", _constants(QuantizeWeightOnly(bits)(dense)))
    ratio = (tmp_path / "fp32.bin").stat().st_size / (tmp_path / "low.bin").stat().st_size
    print(f"{bits}-bit weights.bin: {ratio:.1f}x smaller than fp32")
    assert ratio >= floor
