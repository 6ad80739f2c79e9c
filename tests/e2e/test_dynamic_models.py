"""Issue 21's acceptance models, one dynamic artifact each, against ONNX Runtime at several shapes (slow tier):
ResNet-18 with batch 1..8 and the corpus CRNN recognizer (conv stack, 2-layer bidirectional LSTM, CTC head)
with width 32..1024. Latency against static builds is bench/bench_dynamic.py's job (BENCHMARKS.md)."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import tvmcompress
from tvmcompress.config import CompileOptions

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

pytestmark = pytest.mark.slow


def _check(model: onnx.ModelProto, artifact, name: str, shapes, atol: float) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in shapes:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        expected = session.run(None, {name: x})[0]
        got = artifact.run({name: x})[artifact.outputs[0].name]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=f"shape {shape}")


def test_resnet18_dynamic_batch_matches_onnxruntime(tmp_path):
    from bench_dynamic import resnet18_dynamic_batch

    model, name, ranges, _, _ = resnet18_dynamic_batch()
    onnx.save(model, tmp_path / "resnet18.onnx")
    artifact = tvmcompress.compile(tmp_path / "resnet18.onnx", "host", output=tmp_path / "out",
                                   options=CompileOptions.create(input_shapes={name: ("N", 3, 224, 224)}, dims=ranges))
    assert artifact.manifest["dynamic_dims"] == {"N": {"min": 1, "max": 8}}
    # float32 logits of O(1): 20 layers of reassociated sums (as verification's float tolerance).
    _check(model, artifact, name, [(1, 3, 224, 224), (3, 3, 224, 224), (8, 3, 224, 224)], atol=1e-3)


def test_crnn_dynamic_width_matches_onnxruntime(tmp_path):
    from bench_dynamic import crnn_dynamic_width

    model, name, ranges, _, _ = crnn_dynamic_width()
    onnx.save(model, tmp_path / "crnn.onnx")
    artifact = tvmcompress.compile(tmp_path / "crnn.onnx", "host", output=tmp_path / "out",
                                   options=CompileOptions.create(input_shapes={name: (1, 3, 32, "W")}, dims=ranges))
    assert artifact.manifest["outputs"][0]["dims"] == ["W // 4", 1, 37]
    # log-softmax outputs of O(1), through 256 LSTM steps at the widest.
    _check(model, artifact, name, [(1, 3, 32, 32), (1, 3, 32, 200), (1, 3, 32, 1024)], atol=1e-4)
