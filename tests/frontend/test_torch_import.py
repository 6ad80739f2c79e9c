"""PyTorch import (tvmcompress/torch_import.py): an nn.Module, an ExportedProgram or a .pt2 compiles through the
same pipeline as ONNX and matches the module's own outputs.

Tolerance: 1e-4 absolute on outputs of magnitude ~1 (issue 21's bar). Our float builds differ from torch by
reduction order and the fast exp/tanh polynomials (~1e-6 relative, cpu_pipeline.py's FastMathTransform), so
1e-4 leaves two orders of magnitude while a wrong op or index moves outputs by 1e-2 or more.
"""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tvmcompress  # noqa: E402
from tvmcompress import TvmcompressError  # noqa: E402
from tvmcompress.cli import main  # noqa: E402
from tvmcompress.torch_import import load_program  # noqa: E402

TOLERANCE = 1e-4


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class Encoder(torch.nn.Module):
    """Two post-norm layers with multi-head attention, as nn.TransformerEncoder builds them."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class LSTMHead(torch.nn.Module):
    """An LSTM over a sequence, classifying from the last step (x[:, -1]: a negative select index)."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 24, batch_first=True)
        self.fc = torch.nn.Linear(24, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1])


MODELS = {"cnn": (SmallCNN, (1, 3, 16, 16)), "encoder": (Encoder, (1, 10, 32)), "lstm": (LSTMHead, (1, 7, 16))}


def _model(name: str):
    torch.manual_seed(0)
    cls, shape = MODELS[name]
    module = cls().eval()
    with torch.no_grad():  # BN statistics away from the identity, so folding them is exercised
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module, torch.randn(shape)


def _save_pt2(module, x, path):
    torch.export.save(torch.export.export(module, (x,)), str(path))
    return path


def _check_matches_torch(artifact, module, shape):
    # Fresh inputs, not the example ones the program was exported (and verified) on.
    for seed in (1, 2):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        expected = module(x).detach().numpy()
        got = artifact.run({"x": x.numpy()})["output"]
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) < TOLERANCE


def test_cnn_module_compiles_and_matches_torch(tmp_path):
    module, x = _model("cnn")
    artifact = tvmcompress.compile(module, "host", output=tmp_path / "out", example_inputs=(x,))
    _check_matches_torch(artifact, module, x.shape)
    manifest = artifact.manifest
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    assert manifest["passes"][0]["name"] == "torch_import.import_to_relax"
    # Verified against the module itself, on the example input and a generated one.
    verification = manifest["verification"]
    assert verification["reference"] == "PyTorch" and verification["samples"] == 2
    assert verification["outputs"][0]["max_abs_error"] < TOLERANCE
    report = (tmp_path / "out" / "report.json").read_text()
    assert '"conv2d.default": 2' in report  # the exported graph's op histogram
    # MACs of the two convolutions and the linear layer: output elements x weight elements per output.
    assert '"total": %d' % (16 * 16 * 8 * 27 + 7 * 7 * 16 * 72 + 10 * 16) in report


@pytest.mark.slow
@pytest.mark.parametrize("source", ["module", "pt2"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_corpus_architectures_match_torch_on_host(name, source, tmp_path):
    module, x = _model(name)
    model = module if source == "module" else _save_pt2(module, x, tmp_path / f"{name}.pt2")
    artifact = tvmcompress.compile(model, "host", output=tmp_path / "out",
                                   example_inputs=(x,) if source == "module" else None)
    _check_matches_torch(artifact, module, x.shape)
    assert artifact.manifest["model_name"] == (name if source == "pt2" else None)


@pytest.mark.slow
@pytest.mark.cross
@pytest.mark.parametrize("name", sorted(MODELS))
def test_corpus_architectures_match_torch_on_aarch64_under_qemu(name, tmp_path):
    from tvmcompress.targets import qemu, runtime_cache

    if runtime_cache.missing_tool(runtime_cache.foreign_arch("aarch64")) is not None:
        pytest.skip("needs the aarch64 cross toolchain and qemu-user")
    qemu.prepare_runtime("aarch64")
    module, x = _model(name)
    artifact = tvmcompress.compile(str(_save_pt2(module, x, tmp_path / f"{name}.pt2")), "aarch64",
                                   output=tmp_path / "out")
    assert artifact.manifest["verification"]["elf"]["machine"] == "AArch64"
    assert artifact.manifest["verification"]["mode"] == "qemu"
    _check_matches_torch(artifact, module, x.shape)


# ------------------------------------------------------------------------------------------------ bad input


class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2


@pytest.fixture
def tiny_pt2(tmp_path):
    return _save_pt2(Double(), torch.ones(2, 3), tmp_path / "double.pt2")


def _with_record(src, dst, suffix: str, data: bytes):
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            new.writestr(info, data if info.filename.endswith(suffix) else old.read(info))
    return dst


def test_pt2_from_a_newer_torch_is_one_line_exit_2_nothing_written(tiny_pt2, tmp_path, capsys):
    newer = _with_record(tiny_pt2, tmp_path / "newer.pt2", "/archive_version", b"7")
    out = tmp_path / "out"
    assert main(["compile", str(newer), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "is from a newer torch (archive version 7" in lines[0] and "upgrade torch" in lines[0]
    assert not out.exists()


def test_pt2_with_a_newer_schema_is_refused(tiny_pt2, tmp_path):
    with zipfile.ZipFile(tiny_pt2) as archive:
        name = next(n for n in archive.namelist() if "/models/" in n and n.endswith(".json"))
        text = archive.read(name).decode()
    newer = _with_record(tiny_pt2, tmp_path / "newer.pt2", name.split("/", 1)[1],
                         text.replace('"schema_version": {"major": ', '"schema_version": {"major": 9').encode())
    with pytest.raises(TvmcompressError, match=r"is from a newer torch \(schema version 9"):
        load_program(str(newer))


def test_pt2_compiles_from_the_cli(tiny_pt2, tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(tiny_pt2), "-o", str(out)]) == 0
    artifact = tvmcompress.load(out)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(artifact.run({"x": x})["output"], 2 * x)
    assert artifact.manifest["model_name"] == "double"


def test_not_a_pt2_archive(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(TvmcompressError, match="is not a .pt2 archive"):
        load_program(str(path))


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(TvmcompressError, match=r"needs torch: install the extra: pip install 'tvmcompress\[torch\]'"):
        tvmcompress.compile(str(tmp_path / "model.pt2"), "host", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_module_without_example_inputs(tmp_path):
    with pytest.raises(TvmcompressError, match="needs example_inputs"):
        tvmcompress.compile(Double(), "host", output=tmp_path / "out")


def test_example_inputs_for_an_onnx_model(tmp_path):
    with pytest.raises(TvmcompressError, match="example_inputs are for a PyTorch nn.Module"):
        tvmcompress.compile(str(tmp_path / "m.onnx"), "host", output=tmp_path / "out", example_inputs=(1,))


def test_onnx_only_options_are_refused(tiny_pt2, tmp_path):
    options = tvmcompress.CompileOptions.create(input_shapes={"x": (4, 3)})
    with pytest.raises(TvmcompressError, match=r"input_shapes \(--input-shape\) cannot be used with a PyTorch model"):
        tvmcompress.compile(str(tiny_pt2), "host", output=tmp_path / "out", options=options)
    assert not (tmp_path / "out").exists()


def test_dynamic_dims_are_refused():
    dim = torch.export.Dim("batch", min=2, max=8)
    program = torch.export.export(Double(), (torch.ones(2, 3),), dynamic_shapes={"x": {0: dim}})
    with pytest.raises(TvmcompressError, match="input 'x' has a dynamic dim"):
        load_program(program)


@pytest.mark.slow
def test_static_int8_of_a_torch_module_is_verified_against_torch(tmp_path):
    from tvmcompress.passes.quantize_config import QuantizeConfig

    module, x = _model("cnn")
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, x=np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    options = tvmcompress.CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration=str(calibration))
    artifact = tvmcompress.compile(module, "host", output=tmp_path / "out", example_inputs=(x,), options=options)
    verification = artifact.manifest["verification"]
    assert verification["reference"] == "PyTorch" and verification["compressed"] == "int8"
    assert verification["inputs"] == "calibration"
    # 54 dB measured; the default floor is 10 dB. 30 dB: int8 of a small CNN, well clear of a wrong kernel.
    assert verification["outputs"][0]["sqnr_db"] > 30
