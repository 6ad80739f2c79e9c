"""The artifact cache hands out native code and deletes directories: `cache clear` deletes only what the cache
wrote, a hit checks model.so (and a recorded weights.bin) against its manifest's sha256 before anything reaches
-o, and the key covers the external data files a model reads (tvmcompress/cache.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmcompress
from tvmcompress import cache as cache_mod

from .safety_helpers import assert_refused, main_in_process, save_with_external_data, snapshot, tiny_model

KEY = "ab" * 32  # a well-formed entry name


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A cache holding one entry (the tiny model for host), and the model."""
    root = tmp_path_factory.mktemp("filled")
    model = root / "tiny.onnx"
    onnx.save(tiny_model(), model)
    artifact = tvmcompress.compile(str(model), "host", output=str(root / "first"), cache_dir=str(root / "cache"))
    assert artifact.cache_hit is False
    return model, root / "cache"


def _copy_cache(filled, tmp_path) -> tuple[Path, Path, Path]:
    model, cache = filled
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    entries = [p for p in copy.iterdir() if cache_mod._ENTRY_NAME.fullmatch(p.name)]
    assert len(entries) == 1
    return model, copy, entries[0]


# --- cache clear ------------------------------------------------------------------------------------------------


def _project_dir(d: Path) -> None:
    (d / "src").mkdir()
    (d / "src" / "main.py").write_text("print('hi')\n")
    (d / "README").write_text("readme\n")


def _entry_and_user_file(d: Path) -> None:
    (d / KEY).mkdir()
    (d / KEY / "manifest.json").write_text("{}")
    (d / "notes.txt").write_text("mine\n")


def _foreign_tag(d: Path) -> None:
    (d / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n# made by another tool\n")
    (d / "objects").mkdir()
    (d / KEY).mkdir()


def _symlinked_entry(d: Path) -> None:
    (d.parent / "elsewhere").mkdir()
    (d.parent / "elsewhere" / "precious.txt").write_text("keep\n")
    (d / KEY).symlink_to(d.parent / "elsewhere")


def _single_file(d: Path) -> None:
    (d / ".bashrc").write_text("export PATH\n")


NOT_CACHES = [("project", _project_dir), ("entry-plus-user-file", _entry_and_user_file),
              ("another-tools-tag", _foreign_tag), ("symlinked-entry", _symlinked_entry), ("dotfile", _single_file)]


@pytest.mark.parametrize("make", [m for _, m in NOT_CACHES], ids=[n for n, _ in NOT_CACHES])
@pytest.mark.parametrize("action", ["clear", "clear-json"])
def test_cache_clear_refuses_a_directory_that_is_not_a_cache(tmp_path, capsys, monkeypatch, make, action):
    target = tmp_path / "dir"
    target.mkdir()
    make(target)
    before = snapshot(tmp_path)
    args = ["cache", "clear", "--cache-dir", str(target)] + (["--json"] if action == "clear-json" else [])
    assert_refused(main_in_process(args, capsys, monkeypatch, tmp_path), "is not a tvmcompress cache",
                   "nothing was changed")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make", [m for _, m in NOT_CACHES], ids=[n for n, _ in NOT_CACHES])
def test_compile_refuses_a_cache_dir_that_is_not_a_cache(tmp_path, capsys, monkeypatch, make):
    onnx.save(tiny_model(), tmp_path / "tiny.onnx")
    target = tmp_path / "dir"
    target.mkdir()
    make(target)
    before = snapshot(tmp_path)
    args = ["compile", "tiny.onnx", "-o", "out", "--cache-dir", str(target)]
    assert_refused(main_in_process(args, capsys, monkeypatch, tmp_path), "is not a tvmcompress cache")
    assert snapshot(tmp_path) == before  # no entry, lock or tag in their directory, nothing at -o


def test_clear_removes_entries_and_staging_and_keeps_the_rest(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    cache_mod.ArtifactCache(cache)._ensure()  # a cache of ours: tagged
    (cache / KEY).mkdir()
    (cache / KEY / "model.so").write_bytes(b"x" * 10)
    (cache / ".0123456789ab.tmp-abc_1").mkdir()  # an interrupted store
    (cache / "README.txt").write_text("what this cache is for\n")  # the user's note in a cache they know is ours
    result = main_in_process(["cache", "clear", "--cache-dir", str(cache)], capsys, monkeypatch, tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"cleared {cache}: 1 artifacts, 10 bytes")
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "CACHEDIR.TAG", "README.txt"]


def test_untagged_cache_of_our_layout_is_adopted(tmp_path, capsys, monkeypatch):
    """A cache an older tvmcompress made (no tag): entries, staging and .lock only. It is ours; clear works."""
    cache = tmp_path / "old"
    (cache / KEY).mkdir(parents=True)
    (cache / ".lock").write_text("")
    result = main_in_process(["cache", "clear", "--cache-dir", str(cache)], capsys, monkeypatch, tmp_path)
    assert result.returncode == 0
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "CACHEDIR.TAG"]


def test_new_cache_dir_is_private_and_tagged(tmp_path):
    cache = tmp_path / "new" / "cache"
    cache_mod.ArtifactCache(cache)._ensure()
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55\n")


def test_a_cache_others_can_write_is_warned_about(tmp_path, monkeypatch):
    # The module's logger replaced by a recorder: whatever logging configuration earlier tests (or the libraries
    # they load) left behind (root level, disabled loggers) cannot hide the warning from this test.
    records: list[str] = []

    class Recorder:
        def warning(self, message, *args):
            records.append(message % args)

        def __getattr__(self, name):  # info/debug: not what this test is about
            return lambda *args, **kwargs: None

    monkeypatch.setattr(cache_mod, "log", Recorder())
    cache = tmp_path / "shared"
    cache.mkdir()
    cache_mod.ArtifactCache(cache)._ensure()
    assert not any("written by other users" in r for r in records)  # 0755, ours: quiet
    cache.chmod(0o777)
    cache_mod.ArtifactCache(cache)._ensure()
    assert any("can be written by other users" in r and "chmod go-w" in r for r in records)


# --- a hit checks what it hands out -------------------------------------------------------------------------------


def _tamper_library(entry: Path) -> None:
    data = bytearray((entry / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (entry / "model.so").write_bytes(bytes(data))


def _plant_library(entry: Path) -> None:
    (entry / "model.so").write_bytes(b"\x7fELF planted code")


def _drop_library_hash(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    del manifest["hashes"]["model.so"]
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _tamper_recorded_weights(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["hashes"]["weights.bin"] = hashlib.sha256(b"the weights that were built").hexdigest()
    (entry / "manifest.json").write_text(json.dumps(manifest))
    (entry / "weights.bin").write_bytes(b"other weights")


def _remove_library(entry: Path) -> None:
    (entry / "model.so").unlink()


def _manifest_not_json(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"hashes": {"model.so": ')


def _manifest_a_list(entry: Path) -> None:
    (entry / "manifest.json").write_text("[1, 2]")


TAMPERS = [("flipped-byte", _tamper_library, "model.so"), ("planted", _plant_library, "model.so"),
           ("no-recorded-hash", _drop_library_hash, "model.so"), ("missing", _remove_library, "model.so"),
           ("weights", _tamper_recorded_weights, "weights.bin"), ("manifest-truncated", _manifest_not_json, "manifest.json"),
           ("manifest-a-list", _manifest_a_list, "manifest.json")]


@pytest.mark.parametrize("tamper, name", [(t, n) for _, t, n in TAMPERS], ids=[i for i, _, _ in TAMPERS])
@pytest.mark.parametrize("existing_out", [False, True], ids=["new-out", "over-artifact"])
def test_tampered_entry_is_refused_before_anything_reaches_out(filled, tmp_path, capsys, monkeypatch, tamper, name,
                                                                existing_out):
    model, cache, entry = _copy_cache(filled, tmp_path)
    tamper(entry)
    if existing_out:  # an earlier good artifact at -o stays as it was
        shutil.copytree(filled[1].parent / "first", tmp_path / "out")
    before = snapshot(tmp_path)
    args = ["compile", str(model), "-o", "out", "--cache-dir", str(cache)]
    line = assert_refused(main_in_process(args, capsys, monkeypatch, tmp_path), "tampered", name,
                          f"tvmcompress cache clear --cache-dir {cache}")
    assert "nothing was loaded or written" in line
    assert snapshot(tmp_path) == before


def test_api_hit_refuses_a_planted_library(filled, tmp_path):
    model, cache, entry = _copy_cache(filled, tmp_path)
    _plant_library(entry)
    with pytest.raises(tvmcompress.TvmcompressError, match="tampered"):
        tvmcompress.compile(str(model), "host", output=str(tmp_path / "out"), cache_dir=str(cache))
    assert not (tmp_path / "out").exists()


def test_untampered_hit_passes_the_check(filled, tmp_path, capsys, monkeypatch):
    model, cache, _ = _copy_cache(filled, tmp_path)
    result = main_in_process(["compile", str(model), "-o", "out", "--cache-dir", str(cache), "--json"], capsys,
                             monkeypatch, tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["cache_hit"] is True
    assert (tmp_path / "out" / "model.so").read_bytes() == (filled[1].parent / "first" / "model.so").read_bytes()


# --- the key covers external data ---------------------------------------------------------------------------------


def test_rewritten_external_data_is_a_miss_with_new_outputs(tmp_path):
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    save_with_external_data(tiny_model(np.full((1, 8), 1.0)), model)
    cache = str(tmp_path / "cache")
    first = tvmcompress.compile(str(model), "host", output=str(tmp_path / "a"), cache_dir=cache)
    # Rewrite weights.data only, as a training job writing new weights would: the .onnx file does not change.
    weights = model.parent / "weights.data"
    assert weights.read_bytes() == np.full((1, 8), 1.0, np.float32).tobytes()  # w alone, at offset 0
    weights.write_bytes(np.full((1, 8), 5.0, np.float32).tobytes())
    second = tvmcompress.compile(str(model), "host", output=str(tmp_path / "b"), cache_dir=cache)
    assert (first.cache_hit, second.cache_hit) == (False, False)
    x = {"x": np.zeros((1, 8), np.float32)}
    np.testing.assert_array_equal(first.run(x)["y"], np.full((1, 8), 1.0, np.float32))
    np.testing.assert_array_equal(second.run(x)["y"], np.full((1, 8), 5.0, np.float32))
    third = tvmcompress.compile(str(model), "host", output=str(tmp_path / "c"), cache_dir=cache)
    assert third.cache_hit is True  # unchanged files: a hit again


def _externalize(tensor: onnx.TensorProto, directory: Path) -> None:
    """Move a tensor's bytes to `<name>.bin` beside the model, as an exporter writing external data does."""
    location = f"{tensor.name}.bin"
    (directory / location).write_bytes(numpy_helper.to_array(tensor).tobytes())
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)


def _nested_external_model(tmp_path: Path) -> tuple[onnx.ModelProto, Path, set[str]]:
    """External tensors everywhere a model keeps one: an initializer, a Constant inside an If branch, a sparse
    initializer's values and indices, a Constant in a function body. Returns the model, its path, the files."""
    def tensor(name, value):
        return numpy_helper.from_array(np.full((1, 8), value, np.float32), name)

    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=tensor("c_value", 2.0))], "branch", [],
                               [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 8])])
    nodes = [helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "b"], ["y"])]
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(20, np.float32), "s_values"),
                                       numpy_helper.from_array(np.arange(20, dtype=np.int64), "s_indices"), [40])
    fn = helper.make_function("local", "f", ["i"], ["o"],
                              [helper.make_node("Constant", [], ["k"], value=tensor("f_value", 3.0)),
                               helper.make_node("Add", ["i", "k"], ["o"])], [helper.make_opsetid("", 17)])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [tensor("w", 1.0)],
                              sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[fn], ir_version=9)
    for t in [model.graph.initializer[0], model.graph.node[0].attribute[0].g.node[0].attribute[0].t,
              model.graph.node[0].attribute[1].g.node[0].attribute[0].t, model.graph.sparse_initializer[0].values,
              model.graph.sparse_initializer[0].indices, model.functions[0].node[0].attribute[0].t]:
        if not t.external_data:
            _externalize(t, tmp_path)
    path = tmp_path / "nested.onnx"
    path.write_bytes(model.SerializeToString())
    return model, path, {"w.bin", "c_value.bin", "s_values.bin", "s_indices.bin", "f_value.bin"}


def test_external_data_scan_finds_every_external_tensor(tmp_path):
    from onnx.external_data_helper import _get_all_tensors

    model, path, files = _nested_external_model(tmp_path)
    found = cache_mod.external_data_locations(path.read_bytes())
    assert found == sorted(files) and all((tmp_path / f).is_file() for f in found)
    # What onnx's own loader walks (graphs and attributes; it skips functions and sparse tensors) is a subset.
    onnx_walk = {e.value for t in _get_all_tensors(model) for e in t.external_data if e.key == "location"}
    assert {"w.bin", "c_value.bin"} <= onnx_walk <= set(found)


@pytest.mark.parametrize("data", [b"", b"location", b"\x3a\xff\xff\xff\xff\x0flocation", b"\x07" * 100 + b"location",
                                  b"\x0a\x05location"], ids=["empty", "bare-word", "huge-length", "bad-wire-type",
                                                               "short"])
def test_external_data_scan_of_garbage_is_empty(data):
    assert cache_mod.external_data_locations(data) == []


def test_key_covers_external_data_bytes(tmp_path):
    from tvmcompress.config import CompileOptions

    model = tmp_path / "model.onnx"
    save_with_external_data(tiny_model(), model)
    key = lambda: cache_mod.cache_key(model.read_bytes(), "host", CompileOptions(), "model", str(model))  # noqa: E731
    before = key()
    data = bytearray((tmp_path / "weights.data").read_bytes())
    data[0] ^= 1
    (tmp_path / "weights.data").write_bytes(bytes(data))
    assert key() != before


# --- cache clear --all ------------------------------------------------------------------------------------------


def _ours_and_theirs(home: Path, outside: Path) -> list[Path]:
    """<cache_home> holding what tvmcompress makes there (an artifact entry, a foreign runtime, the node-test
    cases) beside a user's files, another tool's cache and a symlink out; returns the paths of ours."""
    cache_mod.ArtifactCache(home / "artifacts")._ensure()
    (home / "artifacts" / KEY).mkdir()
    (home / "artifacts" / KEY / "model.so").write_bytes(b"x" * 10)
    runtime = home / "runtime" / "aarch64-tvm0.27.0.post1" / "lib"
    runtime.mkdir(parents=True)
    (runtime / "libtvm_runtime.so").write_bytes(b"y" * 20)
    (home / "onnx-1.23.2-node-tests-v2.pkl").write_bytes(b"z" * 5)
    _project_dir(home)  # src/main.py, README
    (home / "perf_lab" / "work").mkdir(parents=True)  # another tool's directory
    (home / "perf_lab" / "work" / "result.json").write_text("{}")
    (home / "runtime" / "my-notes.txt").write_text("keep\n")
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    (home / "link").symlink_to(outside)
    return [home / "artifacts", home / "runtime" / "aarch64-tvm0.27.0.post1", home / "onnx-1.23.2-node-tests-v2.pkl"]


def test_clear_all_deletes_only_what_tvmcompress_made(tmp_path, capsys, monkeypatch):
    records: list[str] = []  # the module's logger replaced by a recorder, as above: the CLI's in-process run
    # configures logging (progress.py), which would otherwise decide what a caplog handler sees

    class Recorder:
        def warning(self, message, *args):
            records.append(message % args)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(cache_mod, "log", Recorder())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    home = tmp_path / "xdg" / "tvmcompress"
    ours = _ours_and_theirs(home, tmp_path / "outside")
    theirs = {rel: data for rel, data in snapshot(tmp_path).items()
              if not any((tmp_path / rel) == p or p in (tmp_path / rel).parents for p in ours)}
    result = main_in_process(["cache", "clear", "--all"], capsys, monkeypatch, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cleared {home}: 1 artifacts, 35 bytes"), result.stdout
    assert not any(p.exists() for p in ours)
    assert snapshot(tmp_path) == theirs  # every other file, directory and link byte-identical
    warning = [message for message in records if "did not create" in message]
    assert len(warning) == 1 and all(n in warning[0] for n in ("README", "src", "perf_lab", "link", "my-notes.txt"))


def test_clear_all_leaves_a_project_that_happens_to_sit_at_cache_home(tmp_path, capsys, monkeypatch):
    """XDG_CACHE_HOME=~ with a checkout at ~/tvmcompress: nothing there has our names, nothing is deleted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    home = tmp_path / "tvmcompress"
    home.mkdir()
    _project_dir(home)
    (home / "runtime").mkdir()  # a project's own runtime/ folder, holding nothing of ours
    (home / "runtime" / "main.c").write_text("int main(void) { return 0; }\n")
    before = snapshot(tmp_path)
    result = main_in_process(["cache", "clear", "--all"], capsys, monkeypatch, tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"cleared {home}: 0 artifacts, 0 bytes")
    assert snapshot(tmp_path) == before


def test_clear_all_refuses_an_artifacts_dir_that_is_not_a_cache_before_deleting_anything(tmp_path, capsys,
                                                                                         monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    home = tmp_path / "xdg" / "tvmcompress"
    (home / "artifacts").mkdir(parents=True)
    _project_dir(home / "artifacts")
    (home / "runtime" / "aarch64-tvm0.27.0").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert_refused(main_in_process(["cache", "clear", "--all"], capsys, monkeypatch, tmp_path),
                   "is not a tvmcompress cache", "nothing was changed")
    assert snapshot(tmp_path) == before
