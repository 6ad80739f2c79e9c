"""`tvmcompress inspect OUT` on an artifact directory: the embedded numbers, as text and as --json."""

from __future__ import annotations

import json

import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.cli import main


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    model = root / "cnn.onnx"
    onnx.save(zoo.cnn(), model)
    return tvmcompress.compile(str(model), "x86-64", output=str(root / "out"))


def test_inspect_json_lists_the_embedded_numbers(artifact, capsys):
    assert main(["inspect", artifact.directory, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = artifact.manifest
    assert summary["artifact"] == artifact.directory
    assert summary["target"] == {
        "preset": "x86-64", "arch": "x86_64", "runner": "native", "isa_features": ["sse4.2", "avx", "avx2", "fma", "f16c"],
    }
    assert summary["sizes"] == manifest["sizes"] and summary["memory"] == manifest["memory"]
    # cnn: NHWC intermediates of 16x16x8 floats (8 KiB) are the largest; the plan holds several storages.
    memory = summary["memory"]
    assert memory["planned_storage_bytes"] >= 16 * 16 * 8 * 4 and memory["storages"] >= 2
    assert memory["output_bytes"] == 10 * 4
    assert memory["peak_activation_bytes"] == (
        memory["planned_storage_bytes"] + memory["output_bytes"] + memory["workspace_bytes"]
    )
    assert summary["sizes"]["flash_bytes"] == summary["sizes"]["library_bytes"] + summary["sizes"]["runtime_bytes"]
    assert summary["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}]


def test_inspect_text_prints_ram_flash_and_isa(artifact, capsys):
    assert main(["inspect", artifact.directory]) == 0
    text = capsys.readouterr().out
    memory, sizes = artifact.manifest["memory"], artifact.manifest["sizes"]
    assert f"peak activation memory (RAM): {memory['peak_activation_bytes']:,} B" in text
    assert f"flash: {sizes['flash_bytes']:,} B" in text
    assert f"library {sizes['library_bytes']:,} B, runtime {sizes['runtime_bytes']:,} B" in text
    assert "ISA features: sse4.2, avx, avx2, fma, f16c" in text


def test_inspect_model_file_still_describes_the_onnx_graph(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert "op_histogram" in json.loads(capsys.readouterr().out)


def test_inspect_artifact_rejects_input_shape(artifact, capsys):
    assert main(["inspect", artifact.directory, "--input-shape", "x=1,3,8,8"]) == 2
    assert "an artifact's shapes are fixed" in capsys.readouterr().err


def test_inspect_directory_that_is_not_an_artifact(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "is not a tvmcompress artifact" in capsys.readouterr().err
