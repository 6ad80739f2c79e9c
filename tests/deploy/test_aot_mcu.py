"""`tvmcompress export --aot --board`: the digits CNN on Cortex-M4 (MPS2 AN386) and Cortex-M55 (MPS3 AN547),
bare metal under qemu-system-arm with semihosting, against ONNX Runtime (fp32) and our host int8 build (int8).

Tolerances: fp32 1e-5 absolute against ONNX Runtime (the issue's bound; the same schedules as on the host,
scalar or MVE float code: a few ulps). int8: the same predictions on all 360 held-out digits as the host
build of the same artifact (the kernels compute in integers, so we also see equal logits, but predictions are
the acceptance bound). Footprint bounds for int8 from the issue: flash <= 64 KiB, RAM (static data + the
stack high-water mark) <= 32 KiB. Tier: `slow` and `cross` (qemu-system-arm, gcc-arm-none-eabi).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import zoo
from export_helpers import HERE
from tvmcompress import compile as tvmc_compile, load
from tvmcompress.aot.firmware import build_firmware, run_firmware
from tvmcompress.cli import main
from tvmcompress.targets.mcu_boards import missing_board_tool, resolve_board

REPO = HERE.parent.parent
DIGITS = REPO / "examples" / "digits_cnn.onnx"
TEST_DATA = REPO / "examples" / "digits_test.npz"
BOARDS = ["cortex-m4", "cortex-m55"]

pytestmark = [pytest.mark.slow, pytest.mark.cross]


def _board(name: str):
    board = resolve_board(name)
    reason = missing_board_tool(board)
    if reason is not None:
        pytest.skip(reason)
    return board


def _digits(count: int | None = None) -> np.ndarray:
    return np.load(TEST_DATA)["input"][:count].astype(np.float32)


def _run_on_board(artifact: Path, board_name: str, samples: np.ndarray, tmp_path: Path):
    """(outputs [N, 10], firmware size, stack high-water mark, bundle footprint)."""
    board = _board(board_name)
    bundle = tmp_path / f"bundle_{board_name}"
    assert main(["export", str(artifact), "-o", str(bundle), "--aot", "--board", board_name, "--name", "m"]) == 0
    work = tmp_path / f"run_{board_name}"
    work.mkdir()
    size = build_firmware(bundle, board, work / "firmware.elf")
    (work / "in.bin").write_bytes(samples.tobytes())
    run = run_firmware(board, work / "firmware.elf", work)
    outputs = np.frombuffer((work / "out.bin").read_bytes(), np.float32).reshape(len(samples), -1)
    return outputs, size, run.stack_bytes, json.loads((bundle / "bundle.json").read_text())["footprint"]


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mcu_fp32") / "out"
    tvmc_compile(DIGITS, "x86-64", output=out)
    return out


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mcu_int8")
    # The first 100 test digits stand in for a calibration set (as tests/e2e/test_quantized_compile.py does).
    np.savez(tmp / "calib.npz", input=np.load(TEST_DATA)["input"][:100])
    assert main(["-q", "compile", str(DIGITS), "-o", str(tmp / "out"), "--quantize", "int8", "--calibration",
                 str(tmp / "calib.npz"), "--calibration-method", "percentile"]) == 0
    return tmp / "out"


@pytest.mark.parametrize("board", BOARDS)
def test_fp32_digits_on_board_match_ort(board, fp32_artifact, tmp_path):
    samples = _digits(5)
    outputs, size, stack, footprint = _run_on_board(fp32_artifact, board, samples, tmp_path)
    model = onnx.load(str(DIGITS))
    for sample, got in zip(samples, outputs):
        expected = zoo.ort_outputs(model, {"input": sample[None]})[0].ravel()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert 0 < stack < 8192
    # export measured the stack too (one run on zeros): the same code path, so the same high-water mark.
    assert footprint["stack_bytes"] == stack
    # The plan of the board's own lowering (its kernels' scratch differs from the host build's).
    assert footprint["arena_bytes"] == footprint["peak_activation_bytes"]
    # The firmware's flash holds the model's footprint plus start-up code and the part of libc/libgcc it uses.
    assert footprint["flash_bytes"] <= size.flash_bytes


@pytest.mark.parametrize("board", BOARDS)
def test_int8_digits_on_board_predict_as_the_host_build_within_budget(board, int8_artifact, tmp_path):
    samples = _digits()
    artifact = load(int8_artifact)
    host = np.concatenate([artifact.run({"input": s[None]})[artifact.outputs[0].name] for s in samples])
    outputs, size, stack, _ = _run_on_board(int8_artifact, board, samples, tmp_path)
    assert len(outputs) == 360
    np.testing.assert_array_equal(outputs.argmax(1), host.argmax(1))
    assert size.flash_bytes <= 64 * 1024, size
    assert size.static_ram_bytes + stack <= 32 * 1024, (size, stack)


def test_board_over_max_ram_exits_2_and_writes_nothing(fp32_artifact, tmp_path, capsys):
    _board("cortex-m4")
    bundle = tmp_path / "bundle"
    code = main(["export", str(fp32_artifact), "-o", str(bundle), "--aot", "--board", "cortex-m4", "--max-ram", "2K"])
    err = capsys.readouterr().err
    assert code == 2 and "over --max-ram 2,048 B" in err and "the layer that peaks is " in err
    assert not bundle.exists()


def test_unknown_board_is_refused(fp32_artifact, tmp_path, capsys):
    assert main(["export", str(fp32_artifact), "-o", str(tmp_path / "b"), "--aot", "--board", "cortex-m99"]) == 2
    assert "unknown board 'cortex-m99'" in capsys.readouterr().err


def test_cmake_example_builds_a_firmware_that_runs_under_qemu(tmp_path):
    """examples/mcu_firmware: tvmcompress_add_model(... AOT BOARD cortex-m4 FIRMWARE) with the bare-metal
    toolchain file; the image runs on qemu's MPS2 AN386 and matches ONNX Runtime (fp32, 1e-5)."""
    import shutil
    import subprocess
    import sys
    import textwrap

    board = _board("cortex-m4")
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("needs cmake and ninja")
    source = tmp_path / "src"
    shutil.copytree(REPO / "examples" / "mcu_firmware", source)
    shutil.copy(DIGITS, tmp_path / "digits_cnn.onnx")  # the example names ../digits_cnn.onnx
    wrapper = tmp_path / "tvmcompress"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        exec "{sys.executable}" -c "import sys; from tvmcompress.cli import main; sys.exit(main())" "$@"
        """))
    wrapper.chmod(0o755)
    cmake_dir = subprocess.run([str(wrapper), "--cmake-dir"], capture_output=True, text=True, check=True).stdout.strip()
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", f"-Dtvmcompress_DIR={cmake_dir}",
         f"-DTVMCOMPRESS_EXECUTABLE={wrapper}", f"-DCMAKE_TOOLCHAIN_FILE={cmake_dir}/toolchains/arm-none-eabi.cmake"],
        capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    built = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    samples = _digits(3)
    work = tmp_path / "run"
    work.mkdir()
    (work / "in.bin").write_bytes(samples.tobytes())
    run_firmware(board, build / "digits_firmware.elf", work)
    outputs = np.frombuffer((work / "out.bin").read_bytes(), np.float32).reshape(3, -1)
    model = onnx.load(str(DIGITS))
    for sample, got in zip(samples, outputs):
        np.testing.assert_allclose(got, zoo.ort_outputs(model, {"input": sample[None]})[0].ravel(), atol=1e-5, rtol=0)
