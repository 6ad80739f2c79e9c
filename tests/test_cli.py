"""The CLI's happy paths: compile writes a complete manifest, run writes outputs, inspect and targets describe."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

import zoo
from tvmcompress.cli import main


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    model = base / "exporter.onnx"
    onnx.save(zoo.exporter_style(), model)
    out = base / "out"
    assert main(["-q", "compile", str(model), "-o", str(out), "--input-shape", "x=1,3,8,8"]) == 0
    return base, model, out


def test_manifest_fields(compiled):
    _, model, out = compiled
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert set(manifest["versions"]) == {"tvmcompress", "tvm", "tvm-ffi"}
    assert manifest["target"]["preset"] == "host" and manifest["target"]["json"]["kind"] == "llvm"
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "y", "shape": [1, 10], "dtype": "float32"}]
    assert [p["name"] for p in manifest["passes"]][:2] == ["frontend.canonicalize", "frontend.import_to_relax"]
    assert manifest["passes"][0]["options"]["input_shapes"] == {"x": [1, 3, 8, 8]}
    sizes = manifest["sizes"]
    assert sizes["source_model_bytes"] == model.stat().st_size
    assert sizes["library_bytes"] == (out / "model.so").stat().st_size
    # Conv 4x3x3x3 + bias 4 + MatMul 256x10, float32.
    assert sizes["weights_bytes"] == (4 * 3 * 3 * 3 + 4 + 256 * 10) * 4
    assert manifest["hashes"]["source_model"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest["hashes"]["model.so"] == hashlib.sha256((out / "model.so").read_bytes()).hexdigest()
    assert manifest["build_seconds"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["op_histogram"]["Conv"] == 1
    assert "<table>" in (out / "report.html").read_text()


def test_run_writes_stacked_outputs(compiled, capsys):
    base, _, out = compiled
    model = zoo.exporter_style()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)  # N=3 samples of batch 1
    np.savez(base / "in.npz", x=x)
    assert main(["run", str(out), "--inputs", str(base / "in.npz"), "--output", str(base / "o.npz")]) == 0
    got = np.load(base / "o.npz")["y"]
    want = np.concatenate([zoo.ort_outputs(model, {"x": x[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert "wrote" in capsys.readouterr().out


def test_inspect_json(tmp_path, capsys):
    path = tmp_path / "cnn.onnx"
    onnx.save(zoo.cnn(), path)
    assert main(["inspect", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["op_histogram"]["Conv"] == 3 and stats["unsupported_ops"] == []
    # 3x3 conv 3->8 on 16x16, 1x1 conv 8->8 on 8x8, depthwise 3x3 on 8x8, Gemm 16->10.
    assert stats["macs"]["total"] == 8 * 3 * 9 * 256 + 8 * 8 * 64 + 8 * 9 * 64 + 16 * 10


def test_inspect_text(tmp_path, capsys):
    path = tmp_path / "t.onnx"
    onnx.save(zoo.transformer(), path)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "LayerNormalization" in text and "unsupported ops: none" in text and "MACs:" in text


def test_targets_lists_presets(capsys):
    assert main(["targets", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert names[0] == "host"
    assert {"x86-64", "x86-64-avx512", "aarch64", "aarch64-dotprod", "armv7", "riscv64", "cuda"} <= set(names)


def test_artifact_run_checks_one_call_exactly(compiled):
    import tvmcompress

    _, _, out = compiled
    artifact = tvmcompress.load(out)
    with pytest.raises(tvmcompress.TvmcompressError, match=r"'x' has shape \[2, 3, 8, 8\], the model expects \[1, 3, 8, 8\]"):
        artifact.run({"x": np.zeros((2, 3, 8, 8), np.float32)})
    with pytest.raises(tvmcompress.TvmcompressError, match="missing input"):
        artifact.run({})
