"""Shared by the bad-input catalogue (test_bad_data.py, test_damaged_artifacts.py, test_bad_cli_input.py).

Every case runs the CLI in this process (`tvmcompress.cli.main`: TVM is imported once for the whole catalogue)
and asserts the contract of a user error: exit code 2, exactly one stderr line starting "tvmcompress: error:",
no traceback, nothing at -o or beside it, and every file the user gave byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tvmcompress.cli import main

_BUILT: dict[str, Path] = {}


def tiny_model(input_name: str = "x", op_name: str = "act") -> onnx.ModelProto:
    """x[2, 8] @ W[8, 4] + b -> Relu: the smallest model that quantizes (MatMul) and classifies (argmax)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 4], rng.normal(0, 0.5, 32).astype(np.float32).tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], rng.normal(0, 0.1, 4).astype(np.float32).tolist())
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["z"], name="bias"),
        helper.make_node("Relu", ["z"], ["y"], name=op_name),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def good_inputs(samples: int = 8, seed: int = 1) -> np.ndarray:
    """Stacked inputs of the tiny model: `samples` model calls of [2, 8]."""
    return np.random.default_rng(seed).normal(0, 1, (2 * samples, 8)).astype(np.float32)


def built_artifact(root: Path, kind: str = "plain") -> Path:
    """A compiled tiny artifact, built once per test process and kind (plain, separate, compressed); copy it
    before damaging it."""
    if kind not in _BUILT:
        model = root / f"tiny-{kind}.onnx"
        onnx.save(tiny_model(), model)
        out = root / f"artifact-{kind}"
        flags = {"plain": [], "separate": ["--separate-weights"], "compressed": ["--compress-weights"]}[kind]
        code = main(["compile", str(model), "-o", str(out), *flags])
        assert code == 0
        _BUILT[kind] = out
    return _BUILT[kind]


def copy_artifact(root: Path, kind: str, dest: Path) -> Path:
    shutil.copytree(built_artifact(root, kind), dest)
    return dest


def snapshot(directory: Path) -> dict[str, str]:
    """{relative path: sha256 (or 'dir'/'link')} of everything under `directory`."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(directory))
            if path.is_symlink():
                result[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                result[rel] = "dir"
            elif not path.is_file():  # a FIFO or device: reading it would block or never end
                result[rel] = "special"
            else:
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *needles: str) -> str:
    lines = err.splitlines()
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("tvmcompress: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_nothing_at(out: Path) -> None:
    """Nothing at -o and no temp or backup directory of ours beside it."""
    assert not os.path.lexists(out), f"{out} was written"
    parent = out.parent
    if parent.is_dir():
        debris = [n for n in os.listdir(parent) if n.startswith(f".{out.name}.")]
        assert debris == [], f"left beside {out}: {debris}"


def expect_user_error(argv: list[str], capsys, user_dir: Path, out: Path | None, *needles: str) -> str:
    """Run argv; assert the user-error contract; return the error line."""
    before = snapshot(user_dir)
    code, _, err = run_cli(argv, capsys)
    line = assert_user_error(code, err, *needles)
    if out is not None:
        assert_nothing_at(out)
    assert snapshot(user_dir) == before, "the user's files changed"
    return line
