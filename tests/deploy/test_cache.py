"""The content-hash artifact cache: a hit does not build and gives byte-identical files; the key moves with
every input that changes the artifact; clear/info; XDG default location."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest

import tvmcompress
import tvmcompress.api
import zoo
from tvmcompress import cache as cache_mod
from tvmcompress.cli import main
from tvmcompress.config import CompileOptions
from tvmcompress.passes.quantize_config import QuantizeConfig


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    model = root / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    artifact = tvmcompress.compile(str(model), "host", output=str(root / "A"), cache_dir=str(root / "cache"))
    return model, root / "cache", artifact


def test_hit_does_not_build_and_is_byte_identical(fresh, tmp_path, monkeypatch):
    model, cache, first = fresh
    assert first.cache_hit is False
    tvmcompress.compile(str(model), "host", output=str(tmp_path / "refill"), cache_dir=str(cache))  # see NOTE
    monkeypatch.setattr(tvmcompress.api, "_compile_fresh", lambda *a, **k: pytest.fail("a cache hit built"))
    second = tvmcompress.compile(str(model), "host", output=str(tmp_path / "B"), cache_dir=str(cache))
    assert second.cache_hit is True
    a, b = _files(Path(first.directory)), _files(tmp_path / "B")
    assert sorted(a) == sorted(b) and "model.so" in a and "manifest.json" in a
    assert all(a[name] == b[name] for name in a)  # build_seconds included: it is the original build's
    # A copy, not a hardlink: editing OUT must not corrupt the cache.
    (tmp_path / "B" / "manifest.json").write_text("{}")
    third = tvmcompress.compile(str(model), "host", output=str(tmp_path / "C"), cache_dir=str(cache))
    assert _files(Path(third.directory)) == a
    # NOTE: other engineers edit this checkout while tests run, and the key holds a digest of tvmcompress's
    # sources; the refill above makes sure the entry matches the current digest before builds are forbidden.


def test_hit_replaces_an_existing_output_atomically(fresh, tmp_path):
    model, cache, first = fresh
    out = tmp_path / "out"
    out.mkdir()
    # An earlier artifact at OUT (only our own output may be replaced: tests/robustness/test_output_safety.py).
    (out / "manifest.json").write_text('{"schema_version": 1}')
    (out / "weights.bin").write_text("old")
    tvmcompress.compile(str(model), "host", output=str(out), cache_dir=str(cache))
    assert sorted(p.name for p in out.iterdir()) == sorted(os.listdir(first.directory))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp directories left beside OUT


def test_key_covers_model_options_target_and_name(tmp_path):
    model = zoo.mlp().SerializeToString()
    base = cache_mod.cache_key(model, "host", CompileOptions(), "mlp")
    assert base == cache_mod.cache_key(model, "host", CompileOptions(), "mlp")
    variants = [
        cache_mod.cache_key(zoo.mlp(seed=1).SerializeToString(), "host", CompileOptions(), "mlp"),
        cache_mod.cache_key(model, "aarch64", CompileOptions(), "mlp"),
        cache_mod.cache_key(model, "host", CompileOptions.create(cores=1), "mlp"),
        cache_mod.cache_key(model, "host", CompileOptions.create(input_shapes={"x": (2, 32)}), "mlp"),
        cache_mod.cache_key(model, "host", CompileOptions.create(quantize=QuantizeConfig(mode="fp16")), "mlp"),
        cache_mod.cache_key(model, "host", CompileOptions(), "other_name"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_key_covers_calibration_bytes_and_versions(tmp_path, monkeypatch):
    import numpy as np

    model = zoo.mlp().SerializeToString()
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.zeros((4, 1, 32), np.float32))
    options = CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration=str(calib))
    before = cache_mod.cache_key(model, "host", options)
    np.savez(calib, x=np.ones((4, 1, 32), np.float32))  # same path, new contents
    after = cache_mod.cache_key(model, "host", options)
    assert after != before
    real_versions = cache_mod._versions
    monkeypatch.setattr(cache_mod, "_versions", lambda: {**real_versions(), "apache-tvm": "0.28"})
    assert cache_mod.cache_key(model, "host", options) not in (before, after)


def test_key_covers_eval_data_bytes(tmp_path):
    import numpy as np

    model = zoo.mlp().SerializeToString()
    calib, evaluation = tmp_path / "calib.npz", tmp_path / "eval.npz"
    np.savez(calib, x=np.zeros((4, 1, 32), np.float32))
    np.savez(evaluation, x=np.zeros((4, 1, 32), np.float32), label=np.zeros(4, np.int64))
    options = CompileOptions.create(
        quantize=QuantizeConfig(mode="int8"), calibration=str(calib), eval_data=str(evaluation), accuracy_budget=1.0
    )
    before = cache_mod.cache_key(model, "host", options)
    np.savez(evaluation, x=np.ones((4, 1, 32), np.float32), label=np.ones(4, np.int64))  # same path, new contents
    assert cache_mod.cache_key(model, "host", options) != before


def test_cli_json_reports_hit_and_cache_clear(fresh, tmp_path, capsys):
    model, _, _ = fresh
    cache = tmp_path / "c"
    assert main(["compile", str(model), "-o", str(tmp_path / "A"), "--cache-dir", str(cache), "--json"]) == 0
    miss = json.loads(capsys.readouterr().out)
    assert main(["compile", str(model), "-o", str(tmp_path / "B"), "--cache-dir", str(cache), "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert (miss["cache_hit"], hit["cache_hit"]) == (False, True)
    assert hit["artifact"] == str(tmp_path / "B") and hit["sizes"] == miss["sizes"] and hit["memory"] == miss["memory"]
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 1 and info["bytes"] == sum(len(v) for v in _files(tmp_path / "A").values())
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(f"cleared {cache}: 1 artifacts")
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == ["CACHEDIR.TAG"]  # still ours
    assert (tmp_path / "B" / "model.so").is_file()  # clearing the cache leaves artifacts alone


def test_default_location_follows_xdg_and_clear_keeps_runtimes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_dir() == tmp_path / "xdg" / "tvmcompress" / "artifacts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_mod.default_cache_dir() == tmp_path / "home" / ".cache" / "tvmcompress" / "artifacts"
    entry = cache_mod.default_cache_dir() / ("0" * 64)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text("{}")
    runtime = tmp_path / "home" / ".cache" / "tvmcompress" / "runtime" / "aarch64-tvm0.27.0"  # runtime_cache's name
    runtime.mkdir(parents=True)
    assert main(["cache", "clear"]) == 0
    assert not entry.exists() and runtime.is_dir()  # plain clear: artifacts only
    assert main(["cache", "clear", "--all"]) == 0
    assert not (tmp_path / "home" / ".cache" / "tvmcompress").exists()


def test_unwritable_cache_dir_is_a_user_error(fresh, tmp_path, capsys):
    model, _, _ = fresh
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["compile", str(model), "-o", str(tmp_path / "out"), "--cache-dir", str(blocker / "sub")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pass another --cache-dir" in err[0]


def test_missing_model_with_a_cache_is_the_usual_user_error(tmp_path, capsys):
    code = main(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.onnx" in err[0]
    assert not (tmp_path / "out").exists()
