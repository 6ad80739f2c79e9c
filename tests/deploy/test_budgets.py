"""Peak activation memory from the static memory plan, runtime/flash bytes, ISA features, --max-ram/--max-flash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmcompress
from tvmcompress.cli import main
from tvmcompress.config import Budgets, parse_bytes
from tvmcompress.errors import TvmcompressError
from tvmcompress.footprint import runtime_libraries

WIDTHS = (16, 64, 64, 64, 4)  # x(1,16) -> h0(1,64) -> h1(1,64) -> h2(1,64) -> y(1,4), float32


def chain_model() -> onnx.ModelProto:
    """Four MatMuls in a row: nothing fuses (each is its own kernel), so every hidden tensor needs memory."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(len(WIDTHS) - 1):
        inits.append(numpy_helper.from_array(rng.normal(size=WIDTHS[i : i + 2]).astype(np.float32), f"w{i}"))
        out = "y" if i == len(WIDTHS) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTHS[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTHS[-1]])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    model = root / "chain.onnx"
    onnx.save(chain_model(), model)
    cache = root / "cache"
    artifact = tvmcompress.compile(str(model), "host", output=str(root / "out"), cache_dir=str(cache))
    return model, cache, artifact


def test_peak_activation_memory_matches_hand_computed_plan(built):
    _, _, artifact = built
    memory = artifact.manifest["memory"]
    # h0 and h1 are live together (h1 = h0 @ w1): two 64 x 4 B = 256 B storages. h2 reuses h0's storage (h0 is
    # dead once h1 exists). y is the output, allocated apart: 4 x 4 B.
    assert memory["planned_storage_bytes"] == 2 * 256
    assert memory["storages"] == 2
    assert memory["output_bytes"] == 16
    # Kernel scratch depends on the schedule; a dense row of 64 floats needs at most a few hundred bytes.
    assert 0 <= memory["workspace_bytes"] <= 1024
    assert memory["peak_activation_bytes"] == 512 + 16 + memory["workspace_bytes"]


def test_sizes_count_runtime_and_flash(built):
    _, _, artifact = built
    sizes = artifact.manifest["sizes"]
    import tvm
    import tvm_ffi

    tvm_lib, ffi_lib = Path(tvm.__file__).parent / "lib", Path(tvm_ffi.__file__).parent / "lib"
    wheel_files = [tvm_lib / "libtvm_runtime.so", tvm_lib / "libtvm_runtime_extra.so", ffi_lib / "libtvm_ffi.so"]
    assert runtime_libraries("x86_64") == [wheel_files[0], wheel_files[2], wheel_files[1]]
    assert sizes["runtime_bytes"] == sum(os.path.getsize(p) for p in wheel_files) > 1_000_000
    assert sizes["library_bytes"] == os.path.getsize(artifact.library_path)
    assert sizes["flash_bytes"] == sizes["library_bytes"] + sizes["runtime_bytes"]
    assert sizes["weights_bytes"] == 4 * sum(a * b for a, b in zip(WIDTHS, WIDTHS[1:]))


def test_isa_features_are_what_the_target_compiles_for(built):
    _, _, artifact = built
    # The host preset on this machine (Zen 3) and the x86-64-v3 preset both mean AVX2 + FMA.
    assert {"avx2", "fma"} <= set(artifact.manifest["target"]["isa_features"])
    from tvmcompress.footprint import isa_features

    assert isa_features({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+v8.2a", "+dotprod"]}) == [
        "neon", "fp-armv8", "dotprod"
    ]
    assert "avx2" not in isa_features({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"})


def test_max_ram_below_peak_fails_the_build_and_writes_nothing(built, tmp_path, capsys):
    model, _, artifact = built
    peak = artifact.manifest["memory"]["peak_activation_bytes"]
    out = tmp_path / "out"
    code = main(["compile", str(model), "-o", str(out), "--max-ram", str(peak - 1)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"tvmcompress: error: peak activation memory is {peak:,} bytes, over --max-ram {peak - 1:,} by 1 bytes "
        f"({100 / (peak - 1):.1f}%): try a smaller --input-shape (batch or resolution) or --quantize int8, "
        "or raise the budget"
    )
    assert os.listdir(tmp_path) == []  # no OUT, no temp directory beside it


@pytest.mark.slow
def test_max_ram_from_the_command_line_one_stderr_line_and_no_output(built, tmp_path):
    """A separate process, as a build system runs it (stderr captured, not a terminal: no progress logs without
    -v): exit 2, exactly one stderr line, nothing on stdout, nothing at OUT."""
    model, _, artifact = built
    peak = artifact.manifest["memory"]["peak_activation_bytes"]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tvmcompress.cli", "compile", str(model), "-o", str(out),
               "--max-ram", str(peak // 2)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"over --max-ram {peak // 2:,} by {peak - peak // 2:,} bytes" in lines[0], result.stderr
    assert result.stdout == "" and os.listdir(tmp_path) == []


def test_max_ram_on_a_cache_hit_is_checked_from_the_cached_numbers(built, tmp_path, capsys, monkeypatch):
    model, cache, artifact = built
    peak = artifact.manifest["memory"]["peak_activation_bytes"]
    out = tmp_path / "out"
    # Fill the cache again in case the source digest moved (other edits in a shared checkout), then forbid builds.
    assert main(["compile", str(model), "-o", str(out), "--cache-dir", str(cache)]) == 0
    import tvmcompress.api

    monkeypatch.setattr(tvmcompress.api, "_compile_fresh", lambda *a, **k: pytest.fail("a cache hit built"))
    capsys.readouterr()
    code = main(["compile", str(model), "-o", str(tmp_path / "over"), "--cache-dir", str(cache),
                 "--max-ram", str(peak // 2)])
    assert code == 2 and f"over --max-ram {peak // 2:,} by {peak - peak // 2:,} bytes" in capsys.readouterr().err
    assert not (tmp_path / "over").exists()
    # The same artifact with room in the budget comes out of the cache.
    assert main(["compile", str(model), "-o", str(out), "--cache-dir", str(cache), "--max-ram", str(peak)]) == 0


def test_max_flash_says_what_the_flash_is_made_of(built, tmp_path, capsys):
    model, cache, artifact = built
    sizes = artifact.manifest["sizes"]
    budget = sizes["flash_bytes"] - 10
    code = main(["compile", str(model), "-o", str(tmp_path / "out"), "--cache-dir", str(cache),
                 "--max-flash", str(budget)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert (f"flash (library {sizes['library_bytes']:,} + runtime {sizes['runtime_bytes']:,}) is "
            f"{sizes['flash_bytes']:,} bytes, over --max-flash {budget:,} by 10 bytes") in err
    assert not (tmp_path / "out").exists()


def test_max_flash_below_the_runtime_fails_before_building(built, tmp_path, monkeypatch):
    model, _, _ = built
    import tvmcompress.build

    def no_build(*_args, **_kwargs):
        raise AssertionError("built although the runtime alone exceeds the budget")

    monkeypatch.setattr(tvmcompress.build, "build_library", no_build)
    with pytest.raises(TvmcompressError, match=r"the x86_64 TVM runtime alone is [\d,]+ bytes, over --max-flash 1,024"):
        tvmcompress.compile(str(model), "host", output=str(tmp_path / "out"), budgets=Budgets(max_flash_bytes=1024))


def test_budget_parsing():
    assert parse_bytes("65536", "--max-ram") == 65536
    assert parse_bytes("256K", "--max-ram") == 256 * 1024
    assert parse_bytes("1.5MiB", "--max-flash") == 3 * 512 * 1024
    assert parse_bytes("2g", "--max-flash") == 2 << 30
    with pytest.raises(TvmcompressError, match="bad --max-ram '12 parsecs': use a number of bytes"):
        parse_bytes("12 parsecs", "--max-ram")
    with pytest.raises(TvmcompressError, match="--max-flash must be a positive, finite number of bytes"):
        parse_bytes("0", "--max-flash")
    with pytest.raises(TvmcompressError, match="^max_ram_bytes must be a positive number of bytes, got -5"):
        Budgets(max_ram_bytes=-5)


@pytest.mark.cross
def test_foreign_target_numbers_come_from_its_runtime_and_features(tmp_path):
    """aarch64: runtime bytes are those of the aarch64 TVM runtime the qemu runner uses (prepared on first use)."""
    from tvmcompress.targets import qemu, runtime_cache

    if runtime_cache.missing_tool(runtime_cache.foreign_arch("aarch64")) is not None:
        pytest.skip("needs the aarch64 cross toolchain and qemu-user")
    lib = qemu.prepare_runtime("aarch64") / "lib"
    model = tmp_path / "chain.onnx"
    onnx.save(chain_model(), model)
    artifact = tvmcompress.compile(str(model), "aarch64", output=str(tmp_path / "out"))
    shipped = [lib / "libtvm_runtime.so", lib / "libtvm_ffi.so", lib / "libtvm_runtime_extra.so"]
    assert artifact.manifest["sizes"]["runtime_bytes"] == sum(p.stat().st_size for p in shipped if p.is_file())
    assert artifact.manifest["target"]["isa_features"] == ["neon", "fp-armv8"]
    assert artifact.manifest["memory"]["planned_storage_bytes"] == 2 * 256  # the plan does not depend on the ISA


def test_max_flash_without_the_foreign_runtime_fails_before_building(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMCOMPRESS_CACHE_DIR", str(tmp_path / "empty-cache"))
    model = tmp_path / "chain.onnx"
    onnx.save(chain_model(), model)
    with pytest.raises(TvmcompressError, match="cannot check --max-flash: the aarch64 TVM runtime is not prepared"):
        tvmcompress.compile(str(model), "aarch64", output=str(tmp_path / "out"), budgets=Budgets(max_flash_bytes=1 << 20))
    assert not (tmp_path / "out").exists()


def test_flash_adds_a_separate_weights_file_and_needs_the_runtime():
    from tvmcompress.footprint import flash_bytes

    assert flash_bytes({"library_bytes": 1000, "runtime_bytes": 5000}) == 6000
    assert flash_bytes({"library_bytes": 1000, "weights_file_bytes": 300, "runtime_bytes": 5000}) == 6300
    assert flash_bytes({"library_bytes": 1000, "runtime_bytes": None}) is None


def test_plan_of_a_hand_written_planned_module():
    """The counting rules on TVMScript: storages once each (a tensor placed in one does not count again), outputs
    from builtin.alloc_tensor; a symbolic size is a DynamicShapeError, not a guess."""
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    from tvmcompress.memory_plan import DynamicShapeError, plan_of

    @I.ir_module
    class Planned:
        @R.function(pure=False)
        def main(x: R.Tensor((1, 64), "float32")) -> R.Tensor((1, 10), "float32"):
            s0 = R.memory.alloc_storage(R.shape([1024]), R.prim_value(0), R.str("global"), R.dtype("float32"))
            _a0 = R.memory.alloc_tensor(s0, R.prim_value(0), R.shape([1, 256]), R.dtype("float32"))
            _a1 = R.memory.alloc_tensor(s0, R.prim_value(0), R.shape([1, 128]), R.dtype("float32"))
            s1 = R.memory.alloc_storage(R.shape([512]), R.prim_value(0), R.str("global"), R.dtype("float32"))
            _a2 = R.memory.alloc_tensor(s1, R.prim_value(0), R.shape([1, 128]), R.dtype("float32"))
            out = R.builtin.alloc_tensor(R.shape([1, 10]), R.dtype("float16"), R.prim_value(0))
            return out

    plan = plan_of(Planned, None)
    assert (plan.planned_storage_bytes, plan.storages, plan.output_bytes, plan.workspace_bytes) == (1536, 2, 20, 0)
    assert plan.peak_activation_bytes == 1556

    @I.ir_module
    class Dynamic:
        @R.function(pure=False)
        def main(x: R.Tensor(("n", 64), "float32")) -> R.Tensor(("n", 64), "float32"):
            n = T.int64()
            _s0 = R.memory.alloc_storage(R.shape([n * 256]), R.prim_value(0), R.str("global"), R.dtype("float32"))
            out = R.builtin.alloc_tensor(R.shape([n, 64]), R.dtype("float32"), R.prim_value(0))
            return out

    with pytest.raises(DynamicShapeError, match="is not a constant"):
        plan_of(Dynamic, None)
