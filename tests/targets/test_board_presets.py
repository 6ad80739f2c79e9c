"""Board presets (Raspberry Pi 3/4/5, i.MX 8M, Jetson Orin's CPU) and microcontroller boards: `tvmcompress
targets` lists them with their features, and each resolves to the core LLVM should schedule for."""

from __future__ import annotations

import json

import pytest

from tvmcompress.cli import main
from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import presets
from tvmcompress.targets.mcu_boards import BOARDS, resolve_board


@pytest.mark.parametrize("name, mcpu, dotprod", [
    ("rpi3", "cortex-a53", False), ("rpi4", "cortex-a72", False), ("rpi5", "cortex-a76", True),
    ("imx8m", "cortex-a53", False), ("imx8mp", "cortex-a53", False), ("jetson-orin-cpu", "cortex-a78", True),
])
def test_board_presets_name_their_core(name, mcpu, dotprod):
    preset = presets.resolve_preset(name)
    assert preset.arch == "aarch64" and preset.runner == "qemu-aarch64"
    assert preset.tvm_target["mcpu"] == mcpu
    assert ("+dotprod" in preset.tvm_target["mattr"]) == dotprod
    # LLVM knows the core: the full target (what the manifest records) keeps it.
    assert presets.full_target_json(preset)["mcpu"] == mcpu


def test_targets_lists_boards_and_microcontrollers_with_features(capsys):
    assert main(["targets", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert {"rpi3", "rpi4", "rpi5", "imx8m", "jetson-orin-cpu", "cortex-m4", "cortex-m7", "cortex-m55"} <= set(listed)
    assert "dotprod" in listed["rpi5"]["features"] and "dotprod" not in listed["rpi4"]["features"]
    assert listed["cortex-m4"]["kind"] == "board" and listed["cortex-m4"]["runner"].endswith("mps2-an386")
    assert "mve.fp" in listed["cortex-m55"]["features"]
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    assert "--aot --board NAME" in text and "features cortex-a76, neon, v8.2a, dotprod" in text


def test_microcontroller_boards_resolve_by_name_or_machine():
    assert resolve_board("mps3-an547") is BOARDS["cortex-m55"]
    board = resolve_board("cortex-m4")
    assert board.tvm_target["mtriple"].startswith("thumbv7em") and "-mfloat-abi=hard" in board.gcc_flags
    with pytest.raises(TvmcompressError, match="unknown board 'stm32'"):
        resolve_board("stm32")


def test_microcontroller_boards_are_not_compile_targets():
    with pytest.raises(TvmcompressError, match="'cortex-m4' is a microcontroller board.*--aot --board cortex-m4"):
        presets.resolve_preset("cortex-m4")


@pytest.mark.slow
@pytest.mark.cross
@pytest.mark.parametrize("name", ["rpi3", "rpi4", "rpi5", "imx8m", "jetson-orin-cpu"])
def test_board_preset_builds_and_verifies_the_zoo_cnn_under_qemu(name, tmp_path):
    """Each board preset compiles a zoo CNN, and compile's own verification runs it under qemu-aarch64 against
    ONNX Runtime (its tolerance: 1e-5 + 1e-3 x max|ort|)."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent))
    import zoo
    from tvmcompress import compile as tvmc_compile
    from tvmcompress.targets.runtime_cache import FOREIGN_ARCHES, missing_tool

    reason = missing_tool(FOREIGN_ARCHES["aarch64"])
    if reason is not None:
        pytest.skip(reason)
    (tmp_path / "cnn.onnx").write_bytes(zoo.cnn().SerializeToString())
    artifact = tvmc_compile(tmp_path / "cnn.onnx", name, output=tmp_path / "out")
    verification = artifact.manifest["verification"]
    assert verification["runner"] == "qemu-aarch64" and verification["mode"] == "qemu"
    assert all(output["top1_agreement"] == 1.0 for output in verification["outputs"])
    assert artifact.manifest["target"]["json"]["mcpu"] == presets.resolve_preset(name).tvm_target["mcpu"]
