"""The --prune spec parser, PruneConfig validation, and the CLI's one-line errors for bad specs."""

from __future__ import annotations

import os

import onnx
import pytest

import zoo
from tvmcompress.cli import main
from tvmcompress.config import CompileOptions
from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.prune_config import PruneConfig, PruneStep, parse_prune_spec


def test_parse_every_step_kind_in_run_order():
    steps = parse_prune_spec("2:4, unstructured:0.8:global,channel:0.5,layer:2")
    assert steps == (
        PruneStep("layer", 2.0),
        PruneStep("channel", 0.5),
        PruneStep("unstructured", 0.8, scope="global"),
        PruneStep("nm", n=2, m=4),
    )
    assert PruneConfig(steps).spec == "layer:2,channel:0.5,unstructured:0.8,2:4"
    assert parse_prune_spec("block:0.75:1x4") == (PruneStep("block", 0.75, block=(1, 4)),)
    assert parse_prune_spec("unstructured:0.5") == (PruneStep("unstructured", 0.5, scope="global"),)
    assert str(parse_prune_spec("unstructured:0.5:layer")[0]) == "unstructured:0.5:layer"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty --prune spec: use unstructured:S, channel:R, block:S:RxC, N:M (2:4) or layer:K, comma-separated"),
        ("channel:1.5", "bad --prune step 'channel:1.5': the ratio must be in [0, 1), got 1.5"),
        ("channel:half", "bad --prune step 'channel:half': the ratio must be a number in [0, 1), got 'half'"),
        ("unstructured:0.5:everywhere",
         "bad --prune step 'unstructured:0.5:everywhere': the scope is 'layer' or 'global', got 'everywhere'"),
        ("layer:0", "bad --prune step 'layer:0': the number of blocks must be a whole number >= 1, got '0'"),
        ("block:0.5:4", "bad --prune step 'block:0.5:4': the block shape is RxC, such as 1x4 or 4x4"),
        ("4:2", "bad --prune step '4:2': N:M keeps N of every M weights, 1 <= N < M (2:4)"),
        ("channels:0.5",
         "bad --prune step 'channels:0.5': use unstructured:S, channel:R, block:S:RxC, N:M (2:4) or layer:K, "
         "comma-separated"),
        ("channel:0.5,channel:0.25",
         "--prune names 'channel' twice in 'channel:0.5,channel:0.25': give each kind of step once"),
        ("block:0.5:1x4,2:4", "--prune 'block:0.5:1x4,2:4' asks for both block and N:M sparsity: choose one"),
    ],
)
def test_bad_specs_say_what_to_write(spec, message):
    with pytest.raises(TvmcompressError) as err:
        parse_prune_spec(spec)
    assert str(err.value) == message


def test_config_validation():
    with pytest.raises(TvmcompressError, match="unknown pruning criterion 'taylor': use one of l1, l2, bn, activation"):
        PruneConfig.parse("channel:0.5", criterion="taylor")
    assert PruneConfig.parse("channel:0.5", criterion="activation").needs_calibration
    assert PruneConfig.parse("channel:0.5").to_json() == {
        "spec": "channel:0.5", "criterion": "l1", "reconstruct": True, "multiple_of": 8, "ridge": 1e-3,
    }


def test_compile_options_accept_calibration_for_pruning(tmp_path):
    npz = tmp_path / "cal.npz"
    npz.write_bytes(b"")
    options = CompileOptions.create(calibration=str(npz), prune=PruneConfig.parse("channel:0.5"))
    assert options.to_json()["prune"]["spec"] == "channel:0.5"
    with pytest.raises(TvmcompressError, match="^calibration is used by quantize=int8 and prune only"):
        CompileOptions.create(calibration=str(npz))
    with pytest.raises(TvmcompressError, match="^prune.criterion=activation needs calibration=FILE.npz"):
        CompileOptions.create(prune=PruneConfig.parse("channel:0.5", criterion="activation"))


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--prune", "channel:2"], "bad --prune step 'channel:2': the ratio must be in [0, 1), got 2"),
        (["--prune", "foo"], "bad --prune step 'foo': use unstructured:S"),
        (["--prune-criterion", "bn"], "--prune-criterion and --no-reconstruct need --prune SPEC"),
        (["--prune", "channel:0.5", "--prune-criterion", "activation"],
         "--prune-criterion activation needs --calibration"),
    ],
)
def test_cli_bad_prune_flags_one_line_exit_2(tmp_path, capsys, flags, needle):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    out = tmp_path / "out"
    code = main(["compile", str(model), "-o", str(out), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("tvmcompress: error: ") and needle in err[0], err
    assert not os.path.exists(out)
