"""Winograd F(m x m, 3 x 3) convolution: the transform matrices, when it is chosen, numerics against onnxruntime for
F(2x2) and F(4x4) (batch, asymmetric padding, tiles overhanging the output, fused epilogues), and evidence in the
scheduled TIR that the Winograd rules and the Dense rule scheduled its three PrimFuncs.

Backend tier: builds and runs on the host CPU. Speed is measured in bench/ (BENCHMARKS.md), not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm_ffi
from onnx import TensorProto, helper
from tvm import s_tir

from tvmcompress.schedules.cpu_rules import Dense, WinogradInputTransform, WinogradOutputTransform
from tvmcompress.schedules.cpu_rules.winograd_compute import (
    F2X2_3X3,
    F4X4_3X3,
    choose_winograd_tile,
    transform_weight,
)

from rule_harness import assert_rule, before_schedule, funcs, make_model, rand, run_both, schedule_model


def _correlate_valid(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    m = d.shape[0] - 2
    return np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(m)] for i in range(m)])


@pytest.mark.parametrize("transform", [F2X2_3X3, F4X4_3X3], ids=["F2x2", "F4x4"])
def test_transform_matrices_compute_a_3x3_correlation(transform):
    # Y = A^T [(G g G^T) . (B^T d B)] A equals the direct 3x3 correlation of the (m+2)^2 tile, in exact arithmetic.
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.standard_normal((transform.alpha, transform.alpha)), rng.standard_normal((3, 3))
        u, v = transform.g @ g @ transform.g.T, transform.bt @ d @ transform.bt.T
        y = transform.at @ (u * v) @ transform.at.T
        np.testing.assert_allclose(y, _correlate_valid(d, g), rtol=0, atol=1e-12)


def test_transform_weight_packs_u_for_the_dense_rule():
    w = rand(20, 16, 3, 3)  # 20 output channels in blocks of 8: the last block is zero-padded
    packed = transform_weight(w, F4X4_3X3, nb=8)
    assert packed.shape == (36, 3, 16, 8) and packed.dtype == np.float32
    u = np.einsum("xi,kcij,yj->xykc", F4X4_3X3.g, w.astype("float64"), F4X4_3X3.g).reshape(36, 20, 16)
    unpacked = packed.transpose(0, 1, 3, 2).reshape(36, 24, 16)
    np.testing.assert_allclose(unpacked[:, :20], u, rtol=1e-6, atol=1e-6)
    assert not unpacked[:, 20:].any()


@pytest.mark.parametrize(
    "data_shape, weight_shape, strides, padding, expected",
    [
        ((1, 56, 56, 64), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), 4),  # ResNet-18 stage 1: 196 tiles of 4x4
        ((1, 7, 7, 512), (512, 512, 3, 3), (1, 1), (1, 1, 1, 1), 2),  # stage 4: 4 tiles of 4x4 are too few
        ((1, 56, 56, 64), (128, 64, 3, 3), (2, 2), (1, 1, 1, 1), None),  # strided
        ((1, 56, 56, 64), (64, 64, 1, 1), (1, 1), (0, 0, 0, 0), None),  # 1x1
        ((1, 32, 32, 16), (16, 16, 3, 3), (1, 1), (1, 1, 1, 1), None),  # too few channels for the GEMM to pay
        ((1, 32, 32, 36), (36, 36, 3, 3), (1, 1), (1, 1, 1, 1), None),  # channels not a multiple of the lanes
        ((1, 3, 3, 64), (64, 64, 3, 3), (1, 1), (0, 0, 0, 0), None),  # a 1x1 output
    ],
)
def test_choose_winograd_tile(data_shape, weight_shape, strides, padding, expected):
    assert choose_winograd_tile(data_shape, weight_shape, strides, (1, 1), padding, lanes=8) == expected


def test_dilated_conv_is_not_winograd():
    assert choose_winograd_tile((1, 32, 32, 64), (64, 64, 3, 3), (1, 1), (2, 2), (2, 2, 2, 2), lanes=8) is None


def _max_relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_f2x2_batch_residual_relu_matches_ort_and_uses_winograd_rules():
    # 10x10 output: 25 tiles of 4x4, too few for F(4x4), so F(2x2). The second conv's residual Add and Relu are
    # NHWC like it, so they are computed inside its output transform.
    w1, w2, b = rand(32, 32, 3, 3), rand(32, 32, 3, 3, seed=1) * 0.1, rand(32)
    model = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r"]),
         helper.make_node("Conv", ["r", "w2", "b"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c2", "r"], ["s"]), helper.make_node("Relu", ["s"], ["t"]),
         helper.make_node("GlobalAveragePool", ["t"], ["y"])],
        [("x", [2, 32, 10, 10])], "y", {"w1": w1, "w2": w2, "b": b},
    )
    actual, expected = run_both(model, {"x": rand(2, 32, 10, 10)})
    assert _max_relative_error(actual, expected) < 2e-6
    scheduled = schedule_model(model)
    assert not [gv for gv in scheduled.get_global_vars() if "conv2d_nhwc_packed" in gv.name_hint]
    outputs = dict(funcs(scheduled, "winograd_output"))
    assert len(outputs) == 2, list(outputs)
    (residual,) = [f for name, f in outputs.items() if "add" in name and "relu" in name]
    block_names = []
    tvm_ffi.structural_walk(residual.body, [(s_tir.SBlock, lambda b: block_names.append(b.name_hint))], order="post")
    assert "winograd_output" not in block_names, block_names  # inlined into the epilogue: Y is written once
    _assert_winograd_rules(model)


def test_f4x4_asymmetric_padding_and_overhanging_tiles_match_ort():
    # pads (top 1, left 0, bottom 0, right 1) give a 29x29 output: 8x8 tiles of 4x4, the last ones overhanging.
    w, b = rand(48, 32, 3, 3), rand(48)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 0, 0, 1])],
                       [("x", [1, 32, 30, 30])], "y", {"w": w, "b": b})
    actual, expected = run_both(model, {"x": rand(1, 32, 30, 30)})
    assert actual.shape == (1, 48, 29, 29)
    # F(4x4)'s transforms hold 1/24 and 8, so float32 rounding grows more than in F(2x2) or a direct conv.
    assert _max_relative_error(actual, expected) < 2e-5  # measured 5e-6
    ((_, gemm),) = funcs(before_schedule(model), "winograd_gemm")
    # U for each of the 6x6 tile elements, 48 output channels in blocks of a SIMD width: 4x the 3x3 weight's bytes.
    elements, blocks, channels, block = (int(d) for d in gemm.params[1].ty.shape)
    assert (elements, channels, blocks * block) == (36, 32, 48)
    _assert_winograd_rules(model)


def test_winograd_input_transform_does_not_absorb_the_previous_layer():
    # The input transform reads each input element up to (m+2)^2 / m^2 times; a fused ReLU would be recomputed.
    w = rand(32, 32, 3, 3)
    model = make_model([helper.make_node("Relu", ["x"], ["r"]),
                        helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                       [("x", [1, 32, 12, 12])], "y", {"w": w})
    actual, expected = run_both(model, {"x": rand(1, 32, 12, 12)})
    assert _max_relative_error(actual, expected) < 2e-6
    ((name, _),) = funcs(schedule_model(model), "winograd_input")
    assert "relu" not in name, name


def _assert_winograd_rules(model):
    assert_rule(model, "winograd_input", WinogradInputTransform(), unrolled=True)
    assert_rule(model, "winograd_gemm", Dense())
    assert_rule(model, "winograd_output", WinogradOutputTransform(), unrolled=True)


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    """A 64-channel 3x3 conv on 28x28 (F(4x4)) as an .onnx file, an input and onnxruntime's output."""
    import onnx
    import onnxruntime as ort

    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                       [("x", [1, 64, 28, 28])], "y", {"w": rand(64, 64, 3, 3)})
    del model.graph.output[:]  # the checker wants the output's shape
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 28, 28]))
    path = tmp_path_factory.mktemp("winograd") / "conv.onnx"
    onnx.save(model, path)
    x = rand(1, 64, 28, 28)
    return path, x, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_no_winograd_keeps_convolutions_direct_and_the_weights_smaller(conv_file, tmp_path):
    # Through the API as users call it: both builds match onnxruntime, the manifest records the choice, and
    # Winograd's transformed weights (36/9 = 4x for F(4x4)) show in the built weights and the library's size.
    import tvmcompress
    from tvmcompress.config import CompileOptions

    path, x, expected = conv_file
    sizes = {}
    for winograd in (True, False):
        artifact = tvmcompress.compile(str(path), "host", output=str(tmp_path / f"w{winograd}"),
                                       options=CompileOptions.create(winograd=winograd))
        actual = artifact.run({"x": x})["y"]
        assert _max_relative_error(actual, expected) < (2e-5 if winograd else 2e-6)
        (pipeline,) = [p for p in artifact.manifest["passes"] if p["name"] == "tvmcompress.cpu_pipeline"]
        assert pipeline["options"] == {"winograd": winograd}
        sizes[winograd] = artifact.manifest["sizes"]
    assert sizes[True]["weights_bytes"] == sizes[False]["weights_bytes"] == 64 * 64 * 9 * 4  # as imported
    assert sizes[False]["built_weights_bytes"] == 64 * 64 * 9 * 4  # packed, same bytes
    assert sizes[True]["built_weights_bytes"] == 64 * 64 * 36 * 4  # U: 6x6 floats per (k, c) pair
    grown = sizes[True]["library_bytes"] - sizes[False]["library_bytes"]
    assert 0.9 * 27 * 64 * 64 * 4 < grown < 1.2 * 27 * 64 * 64 * 4, sizes


@pytest.mark.cross
def test_aarch64_winograd_build_matches_ort_under_qemu(conv_file, tmp_path):
    # NEON: 4 lanes, so other block widths and vector splits than on the AVX2 host.
    import tvmcompress

    path, x, expected = conv_file
    artifact = tvmcompress.compile(str(path), "aarch64", output=str(tmp_path / "a64"))
    assert artifact.manifest["verification"]["elf"]["machine"] == "AArch64"
    assert _max_relative_error(artifact.run({"x": x})["y"], expected) < 2e-5
