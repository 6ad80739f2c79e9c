"""Shared by the output/cache/signal safety tests: a tiny model (one Add, compiled in seconds), a snapshot of a
directory tree to prove a refused command changed nothing, and the one-line-error assertion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9  # onnxruntime rejects ir_version > 13 sometimes; 9 is what tests/zoo.py writes


def tiny_model(weights: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x + w, x and w of shape [1, 8]: the smallest model with a weight."""
    w = np.arange(8, dtype=np.float32).reshape(1, 8) if weights is None else weights.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def save_with_external_data(model: onnx.ModelProto, path: Path, location: str = "weights.data") -> None:
    """Save `model` with every initializer in the external file `location` beside it."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under root (root's own entries included): file bytes, link targets, 'dir' for directories."""
    state: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = path.read_bytes()
    return state


def cli(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as a build system runs it: a separate process, stderr captured (not a terminal: no progress logs)."""
    return subprocess.run([sys.executable, "-m", "tvmcompress.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one stderr line starting 'tvmcompress: error: ', no traceback; returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    assert lines[0].startswith("tvmcompress: error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def main_in_process(args, capsys, monkeypatch, cwd: str | os.PathLike) -> subprocess.CompletedProcess:
    """tvmcompress.cli.main in this process (no interpreter start-up per case: the catalogue stays fast), run
    from `cwd`, as a CompletedProcess like `cli` returns."""
    from tvmcompress.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)
