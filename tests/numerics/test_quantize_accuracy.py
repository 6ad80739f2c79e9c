"""Accuracy of static int8 models, measured by running them (tier: backend, this machine's CPU).

Acceptance from the quantization issue: int8 with each calibration method loses <= 1.0 point of test accuracy
against fp32. Models: the bundled digits CNN (99.2 % fp32) and an MLP trained here on the same data (see
digits_models.py). Calibration uses 200 training images, never test images. fp16/bf16/dynamic-int8 are in
test_low_precision_accuracy.py.

Tolerance: the issue's threshold; on 360 test images one image is 0.28 points, so int8 may lose at most three
images net.
"""

from __future__ import annotations

import pytest
from digits_models import accuracy, calibration

from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig

# Each case compiles twice (~8 s on 2 shared cores): the MLP's histogram methods are in the slow tier.
INT8_CASES = [
    *(pytest.param("digits_cnn", method) for method in ("minmax", "percentile", "entropy", "mse")),
    pytest.param("digits_mlp", "minmax"),
    *(pytest.param("digits_mlp", method, marks=pytest.mark.slow) for method in ("percentile", "entropy", "mse")),
]


def test_fp32_baselines(fp32_accuracy):
    assert fp32_accuracy["digits_cnn"] >= 97.0 and fp32_accuracy["digits_mlp"] >= 95.0


@pytest.mark.parametrize("model,method", INT8_CASES)
def test_int8_loses_at_most_one_point(digits_models, digits_data, fp32_accuracy, model, method):
    x_train, x_test, y_test = digits_data
    mod = digits_models[model]
    quantized, record = quantize(mod, QuantizeConfig(calibration_method=method), calibration(mod, x_train))
    assert record["integer_ops"] == len(record["layers"])  # every conv/matmul runs in int8 x int8 -> int32
    int8_accuracy = accuracy(quantized, x_test, y_test)
    print(f"{model} int8 {method}: {int8_accuracy:.2f} % (fp32 {fp32_accuracy[model]:.2f} %)")
    assert int8_accuracy >= fp32_accuracy[model] - 1.0


@pytest.mark.parametrize("model", ["digits_cnn", "digits_mlp"])
def test_int8_with_7_bit_weights_on_the_avx2_kernels(digits_models, digits_data, fp32_accuracy, model):
    # What api.compile does for an x86 CPU without VNNI: uint8 activations and 7-bit weights ([-63, 63], so that
    # vpmaddubsw's int16 pair sums never saturate), built with cpu_pipeline so that on an AVX2 host the convs and
    # the dense layers run on the vpmaddubsw kernels. Same bound as above: at most 1.0 point lost.
    import tvm

    from tvmcompress.schedules.cpu_pipeline import cpu_pipeline, host_target
    from tvmcompress.schedules.int8_intrinsics import AVX2, dot_intrin_for

    x_train, x_test, y_test = digits_data
    mod = digits_models[model]
    config = QuantizeConfig(activation_dtype="uint8", weight_bits=7)
    quantized, record = quantize(mod, config, calibration(mod, x_train))
    assert record["integer_ops"] == len(record["layers"])
    assert {layer["weight"]["bits"] for layer in record["layers"]} == {7}
    target = host_target()
    executable = tvm.compile(quantized, target, relax_pipeline=cpu_pipeline(target))
    if dot_intrin_for(target) is AVX2:
        assert "vpmaddubsw" in executable.mod.imports[0].inspect_source("asm")
    int8_accuracy = accuracy(quantized, x_test, y_test, executable)
    print(f"{model} int8 7-bit weights: {int8_accuracy:.2f} % (fp32 {fp32_accuracy[model]:.2f} %)")
    assert int8_accuracy >= fp32_accuracy[model] - 1.0
