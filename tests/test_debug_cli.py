"""`tvmcompress debug MODEL [compile options]`: the first tensor where our build and ONNX Runtime disagree.

The wrong kernel (tests/wrong_kernel.py) computes the Sigmoid node `gate` as Tanh: its output differs by ~1 from
ORT's, far above the float tolerance (1e-5 + 1e-3 max|ref|), while every tensor before it matches to ~1e-6.
"""

from __future__ import annotations

import json
import subprocess

import onnx
import pytest

import wrong_kernel
import zoo
from tvmcompress.cli import main
from tvmcompress.debug import _ancestor_nodes, _prune_to


def _debug(tmp_path, only_with_winograd: bool, *flags: str) -> dict:
    model = tmp_path / "gated.onnx"
    onnx.save(wrong_kernel.gated_model(), model)
    cli = wrong_kernel.write_cli(tmp_path, only_with_winograd=only_with_winograd)
    result = subprocess.run([*cli, "debug", str(model), *flags, "--json"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow  # a bisection: 8 builds of cuts in a subprocess (~40 s here)
def test_debug_names_the_injected_wrong_node_and_says_the_unfused_build_is_right(tmp_path):
    report = _debug(tmp_path, False)

    assert report["wrong_outputs"] == ["scores"]
    first = report["first"]
    assert (first["node"], first["op_type"], first["tensor"]) == (wrong_kernel.WRONG_NODE, "Sigmoid", "g")
    assert first["max_abs_error"] > 0.1 and "differs from ONNX Runtime" in first["why"]
    # The node feeding it is right: the fault is in this node, not upstream.
    assert [(i["tensor"], i["wrong"]) for i in report["inputs_of_first"]] == [("c2", False)]
    assert report["no_winograd"]["wrong"] is True  # the fault is not Winograd's
    assert report["unfused"]["wrong"] is False and report["unfused"]["max_abs_error"] < 1e-5


@pytest.mark.slow  # a second bisection (~8 builds); the first test covers the mechanism
def test_debug_says_no_winograd_is_right_when_the_fault_is_only_in_winograd_builds(tmp_path, capsys):
    report = _debug(tmp_path, True)
    assert report["first"]["node"] == wrong_kernel.WRONG_NODE
    assert report["no_winograd"]["wrong"] is False


def test_debug_of_a_right_build_says_every_output_matches(tmp_path, capsys):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    assert main(["debug", str(model)]) == 0
    assert "matches ONNX Runtime at every output" in capsys.readouterr().out


def test_debug_rejects_bad_compile_flags_in_one_line(tmp_path, capsys):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    assert main(["debug", str(model), "--cluster-bits", "9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cluster-bits must be an integer from 1 to 8" in err


def test_cut_keeps_only_the_ancestors_of_the_tensor():
    model = wrong_kernel.gated_model()
    cut = _prune_to(model, ["g"])
    assert [n.name for n in cut.graph.node] == ["conv1", "relu1", "conv2", "gate"]
    assert {i.name for i in cut.graph.initializer} == {"w1", "b1", "w2", "b2"}
    assert _ancestor_nodes(list(model.graph.node), ["r1"]) == [0, 1]
