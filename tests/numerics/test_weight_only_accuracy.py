"""Accuracy of weight-only int8 / int4 models on the digits CNN and MLP (tier: backend, this machine's CPU).

Acceptance from the quantization issue: int8-weight stays within the int8 budget (loses <= 1.0 point of test
accuracy against fp32); int4-weight's loss is reported (printed; run with -s), with a bound that only catches a
broken kernel: 4 bits per weight (15 levels per output channel) may cost a few points, a wrong unpack costs tens.
Measured here (360 test images, one image = 0.28 points): CNN fp32 99.17 %, int8-weight 99.44 %, int4-weight
98.89 % (-0.28); MLP fp32 96.94 %, int8-weight 96.94 %, int4-weight 97.22 % (+0.28).
"""

from __future__ import annotations

import pytest
from digits_models import accuracy

from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig
from tvmcompress.relax_stats import constant_bytes

INT4_MAX_LOSS = 5.0  # points; measured losses are printed


# Each case compiles the model (~10 s on 2 shared cores): one per model and mode in the default suite.
CASES = [
    pytest.param("digits_cnn", "int4-weight"),
    pytest.param("digits_mlp", "int8-weight"),
    pytest.param("digits_cnn", "int8-weight", marks=pytest.mark.slow),
    pytest.param("digits_mlp", "int4-weight", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model,mode", CASES)
def test_weight_only_accuracy(digits_models, digits_data, fp32_accuracy, model, mode):
    _, x_test, y_test = digits_data
    mod = digits_models[model]
    quantized, record = quantize(mod, QuantizeConfig(mode=mode))
    assert record["weight_only_ops"] == len(record["layers"])  # every conv/matmul reads stored integers
    result = accuracy(quantized, x_test, y_test)
    loss = fp32_accuracy[model] - result
    print(f"{model} {mode}: {result:.2f} % (fp32 {fp32_accuracy[model]:.2f} %, loss {loss:.2f} points)")
    assert loss <= (1.0 if mode == "int8-weight" else INT4_MAX_LOSS)
    # The stored weights shrink: int8 is a quarter of the float32 bytes, int4 an eighth (plus fp32 scales and
    # the float biases and batch-norm constants, which stay).
    assert constant_bytes(quantized) < constant_bytes(mod) * (0.4 if mode == "int8-weight" else 0.3)


def test_int4_weight_artifact_stores_packed_weights(tmp_path, digits_data):
    # Through the public API and the CPU build pipeline: the manifest's weights are the packed ones, and the
    # library still classifies (its accuracy on all 360 images is the int4 figure above, within an image).
    import numpy as np
    import onnx
    from digits_models import EXAMPLES
    from onnx import numpy_helper

    import tvmcompress

    _, x_test, y_test = digits_data
    options = tvmcompress.CompileOptions.create(quantize=QuantizeConfig(mode="int4-weight"))
    artifact = tvmcompress.compile(str(EXAMPLES / "digits_cnn.onnx"), "host", output=str(tmp_path / "out"),
                                   options=options)
    fp32_bytes = sum(numpy_helper.to_array(t).nbytes for t in onnx.load(EXAMPLES / "digits_cnn.onnx").graph.initializer)
    manifest = artifact.manifest
    assert manifest["quantization"]["weight_only_ops"] == 3
    assert manifest["quantization"]["config"]["mode"] == "int4-weight"
    # 3 weight tensors packed (2.3 kB) + fp32 scales, biases and batch-norm constants: under a fifth of fp32.
    assert manifest["sizes"]["weights_bytes"] < fp32_bytes / 5
    predictions = [artifact.run({"input": x_test[i : i + 1]})["logits"].argmax(-1)[0] for i in range(len(x_test))]
    assert 100.0 * np.mean(np.array(predictions) == y_test) >= 97.0
