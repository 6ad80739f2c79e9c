"""Every bad input gets one line on stderr, exit code 2, no traceback, and nothing written at OUT."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import zoo
from tvmcompress.cli import main


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("tvmcompress: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def _assert_nothing_written(out_dir):
    assert not os.path.exists(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    leftovers = [n for n in os.listdir(parent) if n.startswith(f".{os.path.basename(out_dir)}.")] if os.path.isdir(parent) else []
    assert leftovers == []


@pytest.fixture
def mlp_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), path)
    return str(path)


def test_nonexistent_model(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["compile", str(tmp_path / "nope.onnx"), "-o", str(out)], capsys)
    _assert_user_error(code, err, "nope.onnx")
    _assert_nothing_written(out)


def test_file_that_is_not_onnx(tmp_path, capsys):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a text file, not a model\n")
    out = tmp_path / "out"
    code, _, err = _run(["compile", str(bad), "-o", str(out)], capsys)
    _assert_user_error(code, err, "notes.onnx")
    _assert_nothing_written(out)


def test_truncated_onnx(tmp_path, capsys, mlp_path):
    data = open(mlp_path, "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = _run(["compile", str(cut), "-o", str(out)], capsys)
    _assert_user_error(code, err, "cut.onnx")
    _assert_nothing_written(out)


def test_unsupported_ops_are_all_named(tmp_path, capsys):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("FancyNorm", ["a"], ["b"], domain="com.example"),
        helper.make_node("WarpAffine", ["b"], ["y"], domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)], ir_version=9
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    code, _, err = _run(["compile", str(path), "-o", str(out)], capsys)
    _assert_user_error(code, err, "FancyNorm", "WarpAffine")
    _assert_nothing_written(out)


def test_missing_input_shape(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(zoo.exporter_style(), path)
    out = tmp_path / "out"
    code, _, err = _run(["compile", str(path), "-o", str(out)], capsys)
    _assert_user_error(code, err, "'x'", "--input-shape")
    _assert_nothing_written(out)


def test_wrong_input_shape(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(zoo.exporter_style(), path)
    out = tmp_path / "out"
    # Rank 2 for a rank-4 input.
    code, _, err = _run(["compile", str(path), "-o", str(out), "--input-shape", "x=1,3"], capsys)
    _assert_user_error(code, err, "'x'")
    _assert_nothing_written(out)
    # An input name the model does not have.
    code, _, err = _run(["compile", str(path), "-o", str(out), "--input-shape", "image=1,3,8,8"], capsys)
    _assert_user_error(code, err, "image")
    _assert_nothing_written(out)


def test_malformed_input_shape_flag(tmp_path, capsys, mlp_path):
    out = tmp_path / "out"
    code, _, err = _run(["compile", mlp_path, "-o", str(out), "--input-shape", "x:1,32"], capsys)
    _assert_user_error(code, err, "NAME=D1,D2")
    _assert_nothing_written(out)


def test_unknown_target(tmp_path, capsys, mlp_path):
    out = tmp_path / "out"
    code, _, err = _run(["compile", mlp_path, "-o", str(out), "--target", "pdp11"], capsys)
    _assert_user_error(code, err, "pdp11", "aarch64")
    _assert_nothing_written(out)


def test_missing_cross_compiler_names_debian_package(tmp_path, capsys, mlp_path, monkeypatch):
    # An empty PATH: no cross compiler can be found, whatever this machine has installed.
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "out"
    code, _, err = _run(["compile", mlp_path, "-o", str(out), "--target", "aarch64"], capsys)
    _assert_user_error(code, err, "aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
    _assert_nothing_written(out)


def test_unwritable_output_dir(tmp_path, capsys, mlp_path):
    # The parent of OUT is a regular file: no user, root included, can create OUT there.
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "out"
    code, _, err = _run(["compile", mlp_path, "-o", str(out)], capsys)
    _assert_user_error(code, err, "cannot write")
    assert not out.exists()


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    import tvmcompress

    base = tmp_path_factory.mktemp("art")
    model = base / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    return str(tvmcompress.compile(str(model), "host", output=str(base / "out")).directory)


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({}, ["missing input(s) x"]),
        ({"x": np.zeros((2, 32), np.float32), "y": np.zeros(3, np.float32)}, ["unknown key(s) y"]),
        ({"x": np.zeros((2, 31), np.float32)}, ["'x'", "[2, 31]", "[2, 32]"]),
        ({"x": np.zeros((2, 32), np.float64)}, ["'x'", "float64", "float32"]),
    ],
    ids=["missing", "extra", "shape", "dtype"],
)
def test_bad_npz(tmp_path, capsys, mlp_artifact, arrays, needles):
    data = tmp_path / "in.npz"
    np.savez(data, **arrays)
    result = tmp_path / "result.npz"
    code, _, err = _run(["run", mlp_artifact, "--inputs", str(data), "--output", str(result)], capsys)
    _assert_user_error(code, err, *needles)
    assert not result.exists()


def test_npz_that_is_not_npz(tmp_path, capsys, mlp_artifact):
    data = tmp_path / "in.npz"
    data.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = _run(["run", mlp_artifact, "--inputs", str(data)], capsys)
    _assert_user_error(code, err, "in.npz")


def test_debug_shows_traceback_through_console_script(tmp_path):
    missing = str(tmp_path / "missing.onnx")
    plain = subprocess.run(
        [sys.executable, "-m", "tvmcompress.cli", "compile", missing, "-o", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "tvmcompress.cli", "--debug", "compile", missing, "-o", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr
