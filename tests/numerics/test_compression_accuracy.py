"""Acceptance of weight compression on the trained digits CNN, through the public API: pruning, int8,
--cluster-bits 4 and --compress-weights together shrink the weights payload (weights.bin's stored tensors)
at least 12x below the fp32 ONNX weights, for at most 1.0 point of test accuracy."""

import json

import numpy as np
import pytest
from digits_models import EXAMPLES, digits_split

import tvmcompress
from tvmcompress.config import CompileOptions
from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.quantize_config import QuantizeConfig
from tvmcompress.weights_file import read_header

# A quarter of the channels, then 65% of the weights left by magnitude x mean |input| (Wanda) under one global
# threshold; reconstruction re-fits the survivors.
PRUNE_SPEC = "channel:0.25,unstructured:0.65:global"
PRUNE_CRITERION = "activation"


@pytest.mark.slow
def test_pruned_int8_clustered_coded_digits_cnn(tmp_path, fp32_accuracy):
    x_train, x_test, _, y_test = digits_split()
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, input=x_train[:200])
    options = CompileOptions.create(
        input_shapes={"input": [1, 1, 8, 8]},
        quantize=QuantizeConfig(mode="int8"), calibration=str(calibration),
        prune=PruneConfig.parse(PRUNE_SPEC, criterion=PRUNE_CRITERION),
        cluster_bits=4, compress_weights=True,
    )
    artifact = tvmcompress.compile(EXAMPLES / "digits_cnn.onnx", "host", output=tmp_path / "out", options=options)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    sizes = manifest["sizes"]["weights_breakdown"]
    codec, entries = read_header(tmp_path / "out" / "weights.bin")
    payload = sum(e.stored_bytes for e in entries)
    assert codec == "tvcw" and sizes["weights_file_stored"] == payload
    accuracy = 100.0 * float(np.mean(artifact.run_batches({"input": x_test})["logits"].argmax(-1) == y_test))
    print(f"payload {payload} B ({sizes['dense_fp32'] / payload:.2f}x), accuracy {accuracy:.2f} vs "
          f"{fp32_accuracy['digits_cnn']:.2f}; breakdown {sizes}")
    assert sizes["dense_fp32"] == 25128  # the CNN's float initializers, 6282 values
    assert sizes["dense_fp32"] / payload >= 12.0
    assert accuracy >= fp32_accuracy["digits_cnn"] - 1.0
    # The stages shrink in order: pruned (sparse form) < dense, clustered indices < int8 values. (The coder's
    # real bytes land near the clustered format's estimate: per-tensor headers and tables against entropy.)
    assert sizes["after_pruning"] < sizes["dense_fp32"]
    assert sizes["after_clustering"] < sizes["after_quantization"] < sizes["after_pruning"]
