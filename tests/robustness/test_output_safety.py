"""`compile -o` never deletes what tvmcompress did not write: every path whose replacement could lose a user's file
is refused with one line and exit 2 before anything is written or deleted (tvmcompress/artifact.py:
check_output_dir_writable). The same rules hold for the Python API, and for a cache hit, which writes OUT too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
import pytest

import tvmcompress
from tvmcompress.artifact import ArtifactWriter, foreign_content

from .safety_helpers import assert_refused, cli, main_in_process, save_with_external_data, snapshot, tiny_model


def _project(root: Path) -> Path:
    """A user's project: the model, its external weights, data and sources, which no -o may destroy."""
    proj = root / "proj"
    (proj / "src").mkdir(parents=True)
    save_with_external_data(tiny_model(), proj / "model.onnx")
    (proj / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (proj / "README").write_text("my project\n")
    return proj


def _existing_file(root: Path) -> str:
    (root / "notes.txt").write_text("keep me\n")
    return "notes.txt"


def _dangling_link(root: Path) -> str:
    (root / "dangling").symlink_to(root / "nowhere")
    return "dangling"


def _link_to_dir(root: Path) -> str:
    (root / "real").mkdir()
    (root / "link").symlink_to(root / "real")
    return "link"


def _user_dir(root: Path) -> str:
    (root / "build").mkdir()
    (root / "build" / "notes.txt").write_text("not an artifact\n")
    return "build"


def _artifact_plus_user_file(root: Path) -> str:
    """An artifact in which the user has put a file of their own: replacing it would lose that file."""
    out = root / "art"
    out.mkdir()
    (out / "manifest.json").write_text('{"schema_version": 1}\n')
    (out / "model.so").write_bytes(b"\x7fELF")
    (out / "my_results.csv").write_text("1,2,3\n")
    return "art"


def _fake_manifest(root: Path) -> str:
    """A manifest.json that is not ours (no schema_version key) beside other files."""
    out = root / "other"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "webapp", "version": "1.0"}\n')
    (out / "index.html").write_text("<html></html>\n")
    return "other"


def _manifest_not_json(root: Path) -> str:
    out = root / "other"
    out.mkdir()
    (out / "manifest.json").write_text("schema_version: 1\n")
    (out / "model.so").write_bytes(b"\x7fELF")
    return "other"


def _bundle_plus_build_dir(root: Path) -> str:
    """An export bundle the user configured a CMake build inside."""
    out = root / "bundle"
    (out / "build").mkdir(parents=True)
    (out / "bundle.json").write_text('{"schema_version": 1, "files": {"model.h": 10}}\n')
    (out / "model.h").write_text("/* header */\n")
    (out / "build" / "CMakeCache.txt").write_text("cache\n")
    return "bundle"


def _tuning_db_inside_artifact(root: Path) -> str:
    out = root / "art"
    (out / "tuning").mkdir(parents=True)
    (out / "manifest.json").write_text('{"schema_version": 1}\n')
    return "art"


# (id, -o as given on the command line relative to the working directory `root`, or a function that makes it,
#  extra CLI flags, working directory inside root, words the error line must contain)
CASES = [
    ("model-dir", "proj", [], ".", ["holds the input", "proj/model.onnx"]),
    ("model-dir-trailing-slash", "proj/", [], ".", ["holds the input"]),
    ("model-dir-dotted", "proj/src/..", [], ".", ["holds the input"]),
    ("ancestor-of-model", "{root}", [], "/", ["holds the input"]),
    ("model-dir-from-elsewhere", "../proj", [], "data", ["holds the input"]),
    ("cwd", ".", [], "proj", ["working directory"]),
    ("cwd-parent", "..", [], "proj/src", ["working directory"]),
    ("cwd-absolute", "{root}/proj/src", [], "proj/src", ["working directory"]),
    ("empty", "", [], ".", ["output path is empty"]),
    ("blank", "  ", [], ".", ["output path is empty"]),
    ("root", "/", [], ".", ["working directory"]),
    ("existing-file", _existing_file, [], ".", ["not a directory"]),
    ("the-model-itself", "proj/model.onnx", [], ".", ["not a directory"]),
    ("dangling-symlink", _dangling_link, [], ".", ["symbolic link"]),
    ("symlink-to-dir", _link_to_dir, [], ".", ["symbolic link"]),
    ("non-empty-user-dir", _user_dir, [], ".", ["not a directory tvmcompress wrote", "notes.txt"]),
    ("artifact-with-user-file", _artifact_plus_user_file, [], ".", ["my_results.csv"]),
    ("foreign-manifest", _fake_manifest, [], ".", ["not a directory tvmcompress wrote"]),
    ("manifest-not-json", _manifest_not_json, [], ".", ["not a directory tvmcompress wrote"]),
    ("bundle-with-build-dir", _bundle_plus_build_dir, [], ".", ["build/CMakeCache.txt"]),
    ("src-dir", "proj/src", [], ".", ["main.c"]),
    ("calibration-inside", "data", ["--quantize", "int8", "--calibration", "data/calib.npz"], ".", ["holds the input", "calib.npz"]),
    ("eval-data-inside", "data", ["--quantize", "int8", "--calibration", "proj/README", "--eval-data",
                                  "data/calib.npz", "--accuracy-budget", "1"], ".", ["holds the input"]),
    ("tuning-db-inside", _tuning_db_inside_artifact, ["--tuning-db", "art/tuning"], ".", ["holds the input"]),
    ("cache-dir-is-out", "cache", ["--cache-dir", "cache"], ".", ["holds the input"]),
    ("cache-dir-inside-out", "data", ["--cache-dir", "data/cache"], ".", ["holds the input"]),
    ("cache-dir-inside-model-dir", "proj", ["--cache-dir", "cache"], ".", ["holds the input"]),
    ("parent-missing", "no/such/dir", [], ".", ["parent directory", "does not exist"]),
    ("parent-is-file", "proj/README/out", [], ".", ["parent directory"]),
]


@pytest.mark.parametrize("name, out, flags, cwd, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_output_is_refused_and_nothing_changes(tmp_path, capsys, monkeypatch, name, out, flags, cwd, needles):
    _project(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "calib.npz").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: never read
    (tmp_path / "cache").mkdir()
    out = out(tmp_path) if callable(out) else out.format(root=tmp_path)
    before = snapshot(tmp_path)
    model = os.path.relpath(tmp_path / "proj" / "model.onnx", tmp_path / cwd)
    result = main_in_process(["compile", model, "-o", out, *flags], capsys, monkeypatch, tmp_path / cwd)
    assert_refused(result, *needles)
    assert snapshot(tmp_path) == before  # nothing written, deleted or left beside -o


def test_api_refuses_the_model_directory(tmp_path):
    proj = _project(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(tvmcompress.TvmcompressError, match="holds the input"):
        tvmcompress.compile(str(proj / "model.onnx"), "host", output=str(proj))
    assert snapshot(tmp_path) == before


def test_external_data_dir_is_protected_through_the_console_script(tmp_path):
    """The model's weights in a subdirectory (location 'weights/w.data'): -o that subdirectory is refused."""
    (tmp_path / "m" / "weights").mkdir(parents=True)
    save_with_external_data(tiny_model(), tmp_path / "m" / "model.onnx", location="weights/w.data")
    before = snapshot(tmp_path)
    assert_refused(cli("compile", "m/model.onnx", "-o", "m/weights", cwd=tmp_path), "holds the input", "w.data")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make", [
    lambda d: None,  # empty directory
    lambda d: ((d / "manifest.json").write_text('{"schema_version": 1}'), (d / "model.so").write_bytes(b"x"),
               (d / "tuning").mkdir(), (d / "tuning" / "anything.json").write_text("{}")),
    lambda d: ((d / "bundle.json").write_text('{"schema_version": 1, "files": {"model.h": 1, "cmake/t.cmake": 1}}'),
               (d / "model.h").write_text("h"), (d / "cmake").mkdir(), (d / "cmake" / "t.cmake").write_text("c")),
], ids=["empty", "artifact", "bundle"])
def test_our_own_output_may_be_replaced(tmp_path, make):
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    assert foreign_content(str(out)) is None
    with ArtifactWriter(str(out)) as writer:
        Path(writer.path("manifest.json")).write_text('{"schema_version": 1}')
    assert sorted(os.listdir(out)) == ["manifest.json"]
    assert os.listdir(tmp_path) == ["out"]  # no lock, temp or old directory left beside it


def test_recompiling_over_our_artifact_works_and_leaves_no_debris(tmp_path):
    """The one case that must keep working: -o an artifact tvmcompress wrote (here by a cache hit, so fast)."""
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), model)
    first = tvmcompress.compile(str(model), "host", output=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    so = (tmp_path / "out" / "model.so").read_bytes()
    second = tvmcompress.compile(str(model), "host", output=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert (tmp_path / "out" / "model.so").read_bytes() == so
    assert sorted(os.listdir(tmp_path)) == ["cache", "out", "tiny.onnx"]
    # A file of the user's inside makes it theirs: refused, the file kept.
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(tvmcompress.TvmcompressError, match="notes.txt"):
        tvmcompress.compile(str(model), "host", output=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "out")
