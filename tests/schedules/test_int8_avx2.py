"""AVX2 int8 kernels (vpmaddubsw + vpmaddwd): exact int32 results against numpy, the int16-saturation guard, and
the instruction in an int8 build's assembly for a non-VNNI x86 target.

The numeric tests run the kernels natively, so they need an AVX2 host (this project's benchmark machine is one).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmcompress.schedules.cpu_pipeline import cpu_pipeline, host_target
from tvmcompress.schedules.int8_conv import pack_conv_weight
from tvmcompress.schedules.int8_intrinsics import AVX2, SDOT, VNNI, dot_intrin_for, pairs_fit_int16
from tvmcompress.schedules.int8_rules import choose_int8_tile

HASWELL = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2}
needs_avx2 = pytest.mark.skipif(
    dot_intrin_for(host_target()) is not AVX2, reason="the host CPU has no AVX2 (or has VNNI, which wins)"
)


def _function(params, body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb))
        bb.emit_func_output(out)
    return bb.get()


def _matmul_module(m: int, weight: np.ndarray) -> tvm.IRModule:
    x = relax.Var("x", relax.TensorType((1, m, weight.shape[0]), "uint8"))
    return _function([x], lambda bb: relax.op.matmul(x, relax.const(weight), out_dtype="int32")), x


def _build(mod: tvm.IRModule, target: tvm.target.Target):
    return tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))


def _run(executable, *arrays) -> np.ndarray:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(a) for a in arrays)).numpy()


def _functions(asm: str) -> dict[str, str]:
    parts = re.split(r"\.type\s+([\w.$]+),@function", asm)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_dot_intrinsic_choice():
    assert dot_intrin_for(tvm.target.Target(HASWELL)) is AVX2
    cascadelake = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}
    assert dot_intrin_for(tvm.target.Target(cascadelake)) is VNNI
    assert dot_intrin_for(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"})) is None
    assert SDOT.int16_pairs is False and AVX2.int16_pairs is True


def test_pairs_fit_int16_is_exact_at_the_7_bit_bounds():
    # Pairs (bytes 0-1, 2-3 of a lane): 255 * (63 + 63) = 32130 and 255 * (-64 - 64) = -32640 fit int16;
    # 255 * (64 + 65) = 32895 does not, nor does 255 * (-127 - 2) = -32895.
    assert pairs_fit_int16(np.array([[63, 63, -64, -64]], np.int8))
    assert not pairs_fit_int16(np.array([[64, 65, 0, 0]], np.int8))
    assert not pairs_fit_int16(np.array([[0, 0, -127, -2]], np.int8))
    assert pairs_fit_int16(np.array([[127, -127, 127, -127]], np.int8))  # opposite signs never saturate
    assert not pairs_fit_int16(np.array([[1, 1, 1, 1]], np.int8), activation_dtype="int8")


def test_register_tile_fits_avx2_registers():
    # 16 ymm: rows * vectors accumulators + vectors weights + 3 scratch (broadcast, int16 ones, vpmaddubsw out);
    # among those, the most dot instructions per register load (rows * vectors / (rows + vectors)).
    assert choose_int8_tile(128, 128, AVX2, 16) == (4, 2)  # 5 x 2 fits too, but 5 does not divide 128
    assert choose_int8_tile(7, 64, AVX2, 16) == (7, 1)  # ResNet's last stage: 7 pixels x 1 vector
    assert choose_int8_tile(14, 64, AVX2, 16) == (2, 2)  # 8 loads for 7 dots (7 x 1) or 4 for 4 (2 x 2)
    assert choose_int8_tile(14, 72, AVX2, 16) == (2, 3)  # MobileNetV2's 576 channels: 3 vectors divide them
    assert choose_int8_tile(5, 1, AVX2, 16) == (5, 1)
    assert choose_int8_tile(128, 64, VNNI, 32) == (8, 2)
    assert choose_int8_tile(128, 48, VNNI, 32) == (8, 3)  # 24 accumulators + 3 weights + 1 scratch


@needs_avx2
def test_avx2_dense_is_exact_at_the_saturation_limits():
    # Worst cases of vpmaddubsw's int16 pair sums: every activation 255 against weights -64 (and 63), plus
    # random values; K = 36 (nine 4-byte groups), N = 20 (padded to 24 lanes, sliced back).
    rng = np.random.default_rng(0)
    m, k, n = 12, 36, 20
    weight = rng.integers(-64, 64, (k, n)).astype(np.int8)
    weight[:, 0], weight[:, 1] = -64, 63
    x = rng.integers(0, 256, (1, m, k)).astype(np.uint8)
    x[0, 0] = 255
    mod, _ = _matmul_module(m, weight)
    target = host_target(2)
    executable = _build(mod, target)
    expected = x.astype(np.int64) @ weight.astype(np.int64)
    assert expected[0, 0, 0] == 255 * -64 * k and expected[0, 0, 1] == 255 * 63 * k
    np.testing.assert_array_equal(_run(executable, x), expected)  # int32, bit for bit
    assert "vpmaddubsw" in executable.mod.imports[0].inspect_source("asm")


@needs_avx2
def test_8_bit_weights_that_would_saturate_take_the_exact_path():
    # 255 * 127 * 2 = 64770 overflows vpmaddubsw's int16: such a weight must not be packed for it.
    k, n = 8, 8
    weight = np.full((k, n), 127, np.int8)
    x = np.full((1, 4, k), 255, np.uint8)
    mod, _ = _matmul_module(4, weight)
    executable = _build(mod, host_target(2))
    np.testing.assert_array_equal(_run(executable, x), np.full((1, 4, n), 255 * 127 * k, np.int64))
    assert "vpmaddubsw" not in executable.mod.imports[0].inspect_source("asm")


@needs_avx2
@pytest.mark.parametrize(
    "shape,out_c,kernel,stride,padding",
    [((1, 9, 11, 3), 12, 3, 2, (1, 1, 1, 1)),  # 3 input channels (padded to 4), 12 outputs (padded to 16)
     ((1, 7, 7, 32), 64, 3, 1, (1, 1, 1, 1)),  # ResNet's last-stage shape: 7-pixel tiles
     ((1, 8, 8, 16), 16, 1, 1, (0, 0, 0, 0))],
    ids=["stem", "7x7", "pointwise"],
)
def test_avx2_conv2d_is_exact(shape, out_c, kernel, stride, padding):
    import torch

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    weight = rng.integers(-64, 64, (out_c, shape[3], kernel, kernel)).astype(np.int8)
    weight[0] = -64
    var = relax.Var("x", relax.TensorType(shape, "uint8"))
    mod = _function([var], lambda bb: relax.op.nn.conv2d(
        var, relax.const(weight), strides=stride, padding=padding, data_layout="NHWC", kernel_layout="OIHW",
        out_dtype="int32"))
    out = _run(_build(mod, host_target(2)), x)
    expected = torch.nn.functional.conv2d(
        torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64), torch.tensor(weight, dtype=torch.float64),
        stride=stride, padding=padding[0],
    ).numpy().transpose(0, 2, 3, 1)  # float64 sums of < 2^53: exact
    np.testing.assert_array_equal(out, expected.astype(np.int64))


@needs_avx2
def test_int8_depthwise_conv2d_is_exact():
    # No channel reduction, so no dot product: int32 accumulation vectorized over channels (DepthwiseConv2D rule).
    import torch

    rng = np.random.default_rng(4)
    shape, channels = (1, 10, 10, 32), 32
    x = rng.integers(0, 256, shape).astype(np.uint8)
    weight = rng.integers(-127, 128, (channels, 1, 3, 3)).astype(np.int8)  # 8-bit: no int16 pairs here
    var = relax.Var("x", relax.TensorType(shape, "uint8"))
    mod = _function([var], lambda bb: relax.op.nn.conv2d(
        var, relax.const(weight), strides=2, padding=1, groups=channels, data_layout="NHWC", kernel_layout="OIHW",
        out_dtype="int32"))
    executable = _build(mod, host_target(2))
    assert any("int8_depthwise" in name for name in _functions(executable.mod.imports[0].inspect_source("asm")))
    expected = torch.nn.functional.conv2d(
        torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64), torch.tensor(weight, dtype=torch.float64),
        stride=2, padding=1, groups=channels,
    ).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(_run(executable, x), expected.astype(np.int64))


def test_pack_conv_weight_layout():
    rng = np.random.default_rng(2)
    w = rng.integers(-64, 64, (12, 3, 2, 2)).astype(np.int8)  # O, C, KH, KW
    packed = pack_conv_weight(w, 8)
    assert packed.shape == (2, 2, 2, 1, 8, 4)
    o, c, kh, kw = 9, 2, 1, 0
    assert packed[o // 8, kh, kw, c // 4, o % 8, c % 4] == w[o, c, kh, kw]
    assert not packed[:, :, :, :, :, 3].any() and not packed[1, :, :, :, 4:].any()  # zero padding


def test_int8_build_for_haswell_uses_vpmaddubsw_in_conv_and_dense():
    # Compile only (any x86 host can): a requantized int8 conv and an int8 dense, each alone in a module (the
    # kernel of a parallel loop lives in its own `__tvm_parallel_lambda` symbol), for a non-VNNI x86 CPU.
    rng = np.random.default_rng(3)
    conv_w = rng.integers(-63, 64, (16, 8, 3, 3)).astype(np.int8)
    var = relax.Var("x", relax.TensorType((1, 6, 6, 8), "uint8"))

    def conv(bb):
        acc = bb.emit(relax.op.nn.conv2d(var, relax.const(conv_w), padding=1, data_layout="NHWC",
                                         kernel_layout="OIHW", out_dtype="int32"))
        return relax.op.quantize(relax.op.astype(acc, "float32"), relax.const(np.float32(64.0)),
                                 relax.const(np.uint8(0)), axis=-1, out_dtype="uint8")

    target = tvm.target.Target(HASWELL)
    for mod, kernel in [(_function([var], conv), "int8_conv2d"),
                        (_matmul_module(4, rng.integers(-63, 64, (64, 10)).astype(np.int8))[0], "int8_dense")]:
        asm = _build(mod, target).mod.imports[0].inspect_source("asm")
        assert any(kernel in name for name in _functions(asm)), sorted(_functions(asm))
        assert "vpmaddubsw" in asm and "vpmaddwd" in asm, kernel
