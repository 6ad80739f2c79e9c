"""SmoothQuant (passes/smooth_quant.py): 1/s goes into the activation's producer (LayerNorm, a constant affine) or
an explicit multiply, s into the weight rows; shared activations share s; the float model is unchanged."""

import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.cli import main
from tvmcompress.config import CompileOptions
from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.quantize import prepare_for_quantization
from tvmcompress.passes.quantize_config import QuantizeConfig
from tvmcompress.passes.smooth_quant import SmoothQuant, measure_channel_absmax, smooth_quant, smoothing_scales

RNG = np.random.default_rng(0)
GAMMA = RNG.uniform(0.5, 1.5, 8).astype(np.float32)
GAMMA[2] = 30.0  # an outlier channel, as LayerNorm gammas of trained transformers have
BETA = RNG.normal(0, 0.1, 8).astype(np.float32)
WQ = RNG.normal(0, 0.3, (8, 6)).astype(np.float32)
WK = RNG.normal(0, 0.3, (8, 6)).astype(np.float32)
S = RNG.uniform(0.5, 4.0, 8).astype(np.float32)


@I.ir_module
class LayerNormMatmul:
    @R.function
    def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 4, 6), "float32"):
        with R.dataflow():
            ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
            y = R.matmul(ln, R.const(WQ))
            R.output(y)
        return y


def test_layer_norm_absorbs_one_over_s():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 4, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA / S), R.const(BETA / S), axes=[-1])
                y = R.matmul(ln, R.const(WQ * S[:, None]))
                R.output(y)
            return y

    smoothed = SmoothQuant({"ln": S})(LayerNormMatmul)
    tvm.ir.assert_structural_equal(smoothed, Expected)
    # Float outputs unchanged up to float32 rounding of gamma / s, beta / s and s * W (a few ulp per term).
    x = RNG.normal(0, 1, (2, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(smoothed, x), run(LayerNormMatmul, x), rtol=1e-5, atol=1e-5)


def test_shared_activation_gets_one_s_and_one_absorption():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tuple(R.Tensor((2, 4, 6), "float32"), R.Tensor((2, 4, 6), "float32")):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
                q = R.matmul(ln, R.const(WQ))
                k = R.matmul(ln, R.const(WK))
                out = (q, k)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tuple(R.Tensor((2, 4, 6), "float32"), R.Tensor((2, 4, 6), "float32")):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA / S), R.const(BETA / S), axes=[-1])
                q = R.matmul(ln, R.const(WQ * S[:, None]))
                k = R.matmul(ln, R.const(WK * S[:, None]))
                out = (q, k)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(SmoothQuant({"ln": S})(Before), Expected)
    # s_j = max|X_j|^a / max|W_j|^(1-a), max|W_j| over BOTH weights (Q and K read the same X / s).
    absmax = {"ln": RNG.uniform(0.1, 50.0, 8)}
    scales = smoothing_scales(Before, absmax, 0.5)
    w_max = np.maximum(np.abs(WQ).max(axis=1), np.abs(WK).max(axis=1))
    np.testing.assert_allclose(scales["ln"], np.sqrt(absmax["ln"]) / np.sqrt(w_max), rtol=1e-6)


def test_activation_also_read_elsewhere_gets_an_explicit_multiply():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 4, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
                r = R.add(ln, x)  # a residual of LayerNorm's output: ln must keep its values
                y = R.matmul(r, R.const(WQ))
                z = R.matmul(ln, R.const(WK))
                out = R.add(y, z)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 4, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
                r = R.add(ln, x)
                y = R.matmul(r, R.const(WQ))
                ln_smoothed = R.multiply(ln, R.const((1.0 / S.astype(np.float64)).astype(np.float32)))
                z = R.matmul(ln_smoothed, R.const(WK * S[:, None]))
                out = R.add(y, z)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(SmoothQuant({"ln": S})(Before), Expected)


def test_constant_affine_absorbs_and_a_parameter_gets_a_multiply():
    g = RNG.uniform(0.5, 2.0, (1, 8)).astype(np.float32)
    b = np.float32(0.25)  # a scalar shift becomes a per-channel one

    @I.ir_module
    class Affine:
        @R.function
        def main(x: R.Tensor((3, 8), "float32")) -> R.Tensor((3, 6), "float32"):
            with R.dataflow():
                e = R.nn.relu(x)
                m = R.multiply(e, R.const(g))
                a = R.add(m, R.const(b))
                y = R.matmul(a, R.const(WK))
                z = R.matmul(x, R.const(WQ))
                out = R.add(y, z)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((3, 8), "float32")) -> R.Tensor((3, 6), "float32"):
            with R.dataflow():
                e = R.nn.relu(x)
                m = R.multiply(e, R.const(g / S))
                a = R.add(m, R.const(np.full(8, b, np.float32) / S))
                y = R.matmul(a, R.const(WK * S[:, None]))
                x_smoothed = R.multiply(x, R.const((1.0 / S.astype(np.float64)).astype(np.float32)))
                z = R.matmul(x_smoothed, R.const(WQ * S[:, None]))
                out = R.add(y, z)
                R.output(out)
            return out

    smoothed = SmoothQuant({"a": S, "x": S})(Affine)
    tvm.ir.assert_structural_equal(smoothed, Expected)
    x = RNG.normal(0, 1, (3, 8)).astype(np.float32)
    np.testing.assert_allclose(run(smoothed, x), run(Affine, x), rtol=1e-5, atol=1e-5)


W1 = RNG.normal(0, 0.3, (8, 16)).astype(np.float32)
B1 = RNG.normal(0, 0.1, (16,)).astype(np.float32)
W2 = RNG.normal(0, 0.3, (16, 6)).astype(np.float32)
S2 = RNG.uniform(0.5, 4.0, 16).astype(np.float32)


def test_linear_layer_absorbs_through_relu_and_composes_with_its_own_smoothing():
    @I.ir_module
    class Mlp:
        @R.function
        def main(x: R.Tensor((3, 8), "float32")) -> R.Tensor((3, 6), "float32"):
            with R.dataflow():
                h = R.matmul(x, R.const(W1))
                hb = R.add(h, R.const(B1))
                r = R.nn.relu(hb)
                y = R.matmul(r, R.const(W2))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((3, 8), "float32")) -> R.Tensor((3, 6), "float32"):
            with R.dataflow():
                x_smoothed = R.multiply(x, R.const((1.0 / S.astype(np.float64)).astype(np.float32)))
                # rows times x's s (a smoothed consumer), columns over r's s (the absorber of r's 1/s)
                h = R.matmul(x_smoothed, R.const((W1 * S[:, None]) / S2[None, :]))
                hb = R.add(h, R.const(B1 / S2))
                r = R.nn.relu(hb)
                y = R.matmul(r, R.const(W2 * S2[:, None]))
                R.output(y)
            return y

    smoothed = SmoothQuant({"x": S, "r": S2})(Mlp)
    tvm.ir.assert_structural_equal(smoothed, Expected)
    x = RNG.normal(0, 1, (3, 8)).astype(np.float32)
    np.testing.assert_allclose(run(smoothed, x), run(Mlp, x), rtol=1e-5, atol=1e-5)


def test_token_mean_is_looked_through():
    @I.ir_module
    class Pooled:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
                p = R.mean(ln, axis=[1])
                y = R.matmul(p, R.const(WQ))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA / S), R.const(BETA / S), axes=[-1])
                p = R.mean(ln, axis=[1])
                y = R.matmul(p, R.const(WQ * S[:, None]))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(SmoothQuant({"p": S})(Pooled), Expected)


def test_without_scales_nothing_changes():
    tvm.ir.assert_structural_equal(SmoothQuant({})(LayerNormMatmul), LayerNormMatmul)
    tvm.ir.assert_structural_equal(SmoothQuant({"not_an_activation": S})(LayerNormMatmul), LayerNormMatmul)


def test_zero_channels_keep_s_one():
    # A channel silent on the calibration data (or meeting all-zero weights) must not be divided by a tiny s: it
    # would become an outlier on other data.
    absmax = {"ln": np.array([0.0, 1, 2, 3, 4, 5, 6, 7])}
    w = WQ.copy()
    w[3] = 0.0

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 6), "float32"):
            with R.dataflow():
                ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
                y = R.matmul(ln, R.const(w))
                R.output(y)
            return y

    s = smoothing_scales(Mod, absmax, 0.75)["ln"]
    assert s[0] == 1.0 and s[3] == 1.0
    np.testing.assert_allclose(s[1], 1.0**0.75 / np.abs(w[1]).max() ** 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        smoothing_scales(Mod, absmax, 1.0)


@I.ir_module
class Block:
    """Pre-LN attention-style block: LayerNorm -> Q/K/V, attention, output projection, residual; the FFN's second
    matmul reads a ReLU (explicit multiply)."""

    @R.function
    def main(x: R.Tensor((2, 4, 8), "float32")) -> R.Tensor((2, 4, 8), "float32"):
        with R.dataflow():
            ln = R.nn.layer_norm(x, R.const(GAMMA), R.const(BETA), axes=[-1])
            q = R.matmul(ln, R.const(RNG.normal(0, 0.3, (8, 8)).astype(np.float32)))
            k = R.matmul(ln, R.const(RNG.normal(0, 0.3, (8, 8)).astype(np.float32)))
            v = R.matmul(ln, R.const(RNG.normal(0, 0.3, (8, 8)).astype(np.float32)))
            scores = R.nn.softmax(R.matmul(q, R.permute_dims(k, [0, 2, 1])), axis=-1)
            attn = R.matmul(scores, v)
            o = R.matmul(attn, R.const(RNG.normal(0, 0.3, (8, 8)).astype(np.float32)))
            h = R.add(x, o)
            f = R.nn.relu(R.matmul(h, R.const(RNG.normal(0, 0.3, (8, 16)).astype(np.float32))))
            y = R.add(h, R.matmul(f, R.const(RNG.normal(0, 0.3, (16, 8)).astype(np.float32))))
            R.output(y)
        return y


def test_smooth_quant_leaves_float_outputs_unchanged():
    x = RNG.normal(0, 1, (2, 4, 8)).astype(np.float32)
    data = [{"x": RNG.normal(0, 1, (2, 4, 8)).astype(np.float32)} for _ in range(4)]
    smoothed, record = smooth_quant(Block, data, 0.5)
    # 6 matmuls with constant weights: Q, K, V (one LayerNorm absorbs), out-proj, FFN in, FFN out.
    assert record["alpha"] == 0.5 and record["smoothed_layers"] == 6
    by_kind = {g["activation"]: (g["absorbed_into"], g["through"], len(g["layers"])) for g in record["activations"]}
    # Q/K/V: the LayerNorm; out-proj: probs @ V -> the V projection's columns; FFN-in: h is also the residual, so
    # an explicit multiply; FFN-out: relu -> FFN-in's columns.
    assert by_kind == {"ln": ("layer_norm", [], 3), "attn": ("linear", ["matmul"], 1), "h": ("multiply", [], 1),
                       "f": ("linear", ["relu"], 1)}
    ln_group = next(g for g in record["activations"] if g["activation"] == "ln")
    assert ln_group["outlier_ratio_after"] < ln_group["outlier_ratio_before"] / 2  # GAMMA[2] = 30
    expected = run(Block, x)
    np.testing.assert_allclose(run(smoothed, x), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_excluded_layers_are_smoothed_only_with_a_shared_activation():
    data = [{"x": RNG.normal(0, 1, (2, 4, 8)).astype(np.float32)}]
    # matmul_1 (K) shares the LayerNorm's output with Q and V, which are smoothed: K is scaled with them.
    # matmul_3 (out-proj) alone reads probs @ V: excluded, not smoothed.
    _, record = smooth_quant(Block, data, 0.5, exclude=("matmul_1", "matmul_3"))
    assert record["smoothed_layers"] == 5
    assert sorted(tuple(g["layers"]) for g in record["activations"]) == [
        ("matmul_0", "matmul_1", "matmul_2"), ("matmul_4",), ("matmul_5",)
    ]


def test_channel_absmax_is_the_max_over_all_calls():
    data = [{"x": RNG.normal(0, 1, (2, 4, 8)).astype(np.float32)} for _ in range(3)]
    mod = prepare_for_quantization(LayerNormMatmul)
    measured = measure_channel_absmax(mod, ["x", "ln"], data)
    stacked = np.concatenate([d["x"].reshape(-1, 8) for d in data])
    np.testing.assert_allclose(measured["x"], np.abs(stacked).max(axis=0), rtol=0)
    mean, var = stacked.mean(-1, keepdims=True), stacked.var(-1, keepdims=True)
    ln = (stacked - mean) / np.sqrt(var + 1e-5) * GAMMA + BETA
    np.testing.assert_allclose(measured["ln"], np.abs(ln).max(axis=0), rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothquant": 1.0}, "smoothquant ALPHA must be between 0 and 1, exclusive (0.5 is typical), got 1.0"),
        ({"smoothquant": 0.0}, "smoothquant ALPHA must be between 0 and 1, exclusive (0.5 is typical), got 0.0"),
        ({"mode": "fp16", "smoothquant": 0.5},
         "smoothquant applies to quantize=int8 or dynamic-int8 only, not fp16: drop it or change quantize"),
    ],
)
def test_config_refuses_bad_smoothquant(kwargs, message):
    with pytest.raises(TvmcompressError) as err:
        QuantizeConfig(**kwargs)
    assert str(err.value) == message


def test_smoothquant_needs_calibration_and_dynamic_int8_accepts_it(tmp_path):
    with pytest.raises(TvmcompressError, match=r"^smoothquant needs calibration=FILE.npz"):
        CompileOptions.create(quantize=QuantizeConfig(mode="dynamic-int8", smoothquant=0.5))
    calibration = tmp_path / "c.npz"
    options = CompileOptions.create(quantize=QuantizeConfig(mode="dynamic-int8", smoothquant=0.5),
                                    calibration=str(calibration))
    assert options.to_json()["quantize"]["smoothquant"] == 0.5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--smoothquant", "0.5"], "--smoothquant needs --quantize int8 (or dynamic-int8) and --calibration FILE.npz"),
        (["--quantize", "int8", "--smoothquant", "2", "--calibration", "c.npz"],
         "--smoothquant ALPHA must be between 0 and 1, exclusive (0.5 is typical), got 2.0"),
        (["--quantize", "dynamic-int8", "--smoothquant", "0.5"],
         "--smoothquant needs --calibration FILE.npz: inputs to measure each activation channel's range on"),
    ],
)
def test_cli_refuses_bad_smoothquant(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code = main(["compile", str(tmp_path / "model.onnx"), "-o", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"tvmcompress: error: {message}"]
    assert not out.exists()
