"""The entry point: config in, (module, JSON record) out; the pipeline order of quantize.py's docstring."""

import json

import numpy as np
import pytest
import tvm
from quant_helpers import run
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig

RNG = np.random.default_rng(0)
W1 = RNG.normal(0, 0.5, (8, 16)).astype(np.float32)
B1 = RNG.normal(0, 0.1, (16,)).astype(np.float32)
W2 = RNG.normal(0, 0.5, (16, 4)).astype(np.float32)


@I.ir_module
class Mlp:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 4), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W1))
            hb = R.add(h, R.const(B1))
            r = R.nn.relu(hb)
            y = R.matmul(r, R.const(W2))
            R.output(y)
        return y


def _samples(n=32):
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(2, 8)).astype(np.float32)} for _ in range(n)]


def _ops(mod):
    return [b.value.op.name for block in mod["main"].body.blocks for b in block.bindings if hasattr(b.value, "op")]


def test_int8_pipeline_produces_integer_ops_and_record():
    quantized, record = quantize(Mlp, QuantizeConfig(calibration_method="entropy"), _samples())
    assert _ops(quantized) == [
        "relax.quantize", "relax.matmul", "relax.add", "relax.astype", "relax.multiply",  # layer 0, bias in int32
        # relu hoisted away (zero point -128 is the lowest code); the add is the zero-point correction
        "relax.quantize", "relax.matmul", "relax.add", "relax.astype", "relax.multiply",
    ]
    json.dumps(record)  # serializable as is
    assert record["integer_ops"] == 2 and record["excluded"] == []
    assert [layer["name"] for layer in record["layers"]] == ["matmul_0", "matmul_1"]
    assert record["layers"][1]["activations"]["r"]["zero_point"] == -128
    assert record["layers"][0]["weight"]["channels"] == 16
    x = _samples(1)[0]["x"]
    ref = run(Mlp, x)
    # Two int8 layers: error a few percent of the output range (a loose bound; accuracy is tested on models).
    assert np.abs(run(quantized, x) - ref).max() < 0.05 * np.abs(ref).max()


def test_int8_exclude_by_alias_and_binding():
    quantized, record = quantize(Mlp, QuantizeConfig(exclude=("matmul_1",)), _samples(4))
    assert record["excluded"] == ["matmul_1"] and record["integer_ops"] == 1
    _, record = quantize(Mlp, QuantizeConfig(exclude=("h", "y")), _samples(4))
    assert record["integer_ops"] == 0 and record["excluded"] == ["matmul_0", "matmul_1"]


def test_errors_tell_the_user_what_to_do():
    with pytest.raises(TvmcompressError, match="matmul_0 \\(h\\)"):
        quantize(Mlp, QuantizeConfig(exclude=("conv9",)), _samples(1))
    with pytest.raises(TvmcompressError, match="calibration data"):
        quantize(Mlp, QuantizeConfig(), None)


@pytest.mark.parametrize("mode,dtype", [("fp16", "float16"), ("bf16", "bfloat16")])
def test_low_precision_modes(mode, dtype):
    converted, record = quantize(Mlp, QuantizeConfig(mode=mode))
    assert record["compute_dtype"] == dtype and record["config"]["mode"] == mode
    weights = [b.value.args[1] for b in converted["main"].body.blocks[0].bindings if _is_matmul(b.value)]
    assert [str(w.ty.dtype) for w in weights] == [dtype, dtype]  # stored in the low precision


def _is_matmul(value):
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.matmul"


def test_dynamic_int8_needs_no_calibration():
    quantized, record = quantize(Mlp, QuantizeConfig(mode="dynamic-int8", exclude=("matmul_1",)))
    assert record["integer_ops"] == 1 and record["excluded"] == ["matmul_1"]
    x = _samples(1)[0]["x"]
    ref = run(Mlp, x)
    assert np.abs(run(quantized, x) - ref).max() < 0.05 * np.abs(ref).max()


ARANGE = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)  # a DFL head's integral: sum_k k * p_k


@I.ir_module
class DflIntegral:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 16), "float32")) -> R.Tensor((1, 1, 4, 8), "float32"):
        with R.dataflow():
            p = R.nn.softmax(x, axis=-1)
            bins = R.permute_dims(p, [0, 3, 1, 2])
            d = R.nn.conv2d(bins, R.const(ARANGE))
            R.output(d)
        return d


@I.ir_module
class LogitsIntegral:  # the same conv, reading logits: an ordinary layer
    @R.function
    def main(x: R.Tensor((1, 4, 8, 16), "float32")) -> R.Tensor((1, 1, 4, 8), "float32"):
        with R.dataflow():
            bins = R.permute_dims(x, [0, 3, 1, 2])
            d = R.nn.conv2d(bins, R.const(ARANGE))
            R.output(d)
        return d


def test_int8_keeps_softmax_readers_float():
    # 7-bit weights (AVX2) would store [0..15] with scale 15/63: 1 -> 0.952, up to 0.095 bins off. Kept float,
    # the integral is the float model's to float32 rounding.
    rng = np.random.default_rng(2)
    samples = [{"x": (3 * rng.normal(size=(1, 4, 8, 16))).astype(np.float32)} for _ in range(8)]
    quantized, record = quantize(DflIntegral, QuantizeConfig(weight_bits=7), samples)
    assert record["integer_ops"] == 0 and list(record["kept_float"]) == ["conv2d_0"]
    for sample in samples[:2]:
        np.testing.assert_allclose(run(quantized, sample["x"]), run(DflIntegral, sample["x"]), rtol=1e-5, atol=1e-5)
    _, record = quantize(LogitsIntegral, QuantizeConfig(weight_bits=7), samples)
    assert record["integer_ops"] == 1 and "kept_float" not in record
