"""Damaged artifacts (issue 18, items 6 and 7): a truncated or modified model.so, a damaged manifest or
weights.bin is refused in one line that says "recompile", exit 2, before any native code is loaded. No SIGBUS,
SIGSEGV or traceback, for `run`, `inspect` and `export` alike, and the artifact itself is left as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvmcompress import weight_codec, weights_file
from tvmcompress.errors import TvmcompressError

from .bad_input_support import built_artifact, copy_artifact, expect_user_error, good_inputs


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("damaged-artifacts")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path, size: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: size % (len(data) + 1)] if size >= 0 else data[:size])


def _plant(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())


def _edit_manifest(change):
    def damage(art: Path, _root: Path) -> None:
        manifest = json.loads((art / "manifest.json").read_text())
        change(manifest)
        (art / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _set(path: str, value):
    keys = path.split("/")

    def change(manifest):
        node = manifest
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value

    return change


def _delete(path: str):
    keys = path.split("/")

    def change(manifest):
        node = manifest
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[keys[-1]]

    return change


def _write_manifest(text: bytes):
    def damage(art: Path, _root: Path) -> None:
        (art / "manifest.json").write_bytes(text)

    return damage


def _library(action, *args):
    def damage(art: Path, root: Path) -> None:
        action(art / "model.so", *args)

    return damage


def _replace_library_with(kind: str):
    def damage(art: Path, root: Path) -> None:
        path = art / "model.so"
        path.unlink()
        if kind == "missing":
            return
        if kind == "directory":
            path.mkdir()
        elif kind == "dev-zero":
            path.symlink_to("/dev/zero")
        elif kind == "dangling":
            path.symlink_to(art / "no-such-file")
        elif kind == "fifo":
            os.mkfifo(path)

    return damage


def _planted_library(art: Path, root: Path) -> None:
    """A valid model.so of another build (what a writer to a shared cache could plant)."""
    other = built_artifact(root, "separate") / "model.so"
    (art / "model.so").write_bytes(other.read_bytes())


# (case id, damage(artifact dir, build root), artifact kind, words the one line must hold)
LIBRARY_CASES = [
    ("so-empty", _library(_truncate, 0), "model.so"),
    ("so-1-byte", _library(_truncate, 1), "model.so"),
    ("so-elf-header-only", _library(_truncate, 64), "model.so"),
    ("so-4k", _library(_truncate, 4096), "model.so"),
    ("so-minus-1", _library(_truncate, -1), "model.so"),
    ("so-minus-4k", _library(_truncate, -4096), "model.so"),
    ("so-flip-magic", _library(_flip, 0), "model.so"),
    ("so-flip-class", _library(_flip, 4), "model.so"),
    ("so-flip-phoff", _library(_flip, 32), "model.so"),
    ("so-flip-shoff", _library(_flip, 40), "model.so"),
    ("so-flip-1000", _library(_flip, 1000), "model.so"),
    ("so-flip-middle", _library(_flip, 9001), "model.so"),
    ("so-flip-last", _library(_flip, -1), "model.so"),
    ("so-appended", lambda art, root: (art / "model.so").write_bytes((art / "model.so").read_bytes() + b"\0" * 7), "model.so"),
    ("so-planted-other-build", _planted_library, "model.so"),
    ("so-missing", _replace_library_with("missing"), "model.so"),
    ("so-directory", _replace_library_with("directory"), "model.so"),
    ("so-dev-zero-link", _replace_library_with("dev-zero"), "model.so"),
    ("so-dangling-link", _replace_library_with("dangling"), "model.so"),
    ("so-fifo", _replace_library_with("fifo"), "model.so"),
]

MANIFEST_CASES = [
    ("manifest-empty", _write_manifest(b""), "manifest.json"),
    ("manifest-not-json", _write_manifest(b"{ this is not json"), "manifest.json"),
    ("manifest-truncated", lambda art, root: _truncate(art / "manifest.json", 200), "manifest.json"),
    ("manifest-bad-utf8", _write_manifest(b'{"schema_version": 1, "x": "\xff\xfe"}'), "manifest.json"),
    ("manifest-nan", _write_manifest(b'{"schema_version": 1, "build_seconds": NaN}'), "manifest.json"),
    ("manifest-array", _write_manifest(b"[1, 2, 3]"), "manifest.json"),
    ("manifest-null", _write_manifest(b"null"), "manifest.json"),
    ("manifest-string", _write_manifest(b'"model"'), "manifest.json"),
    ("manifest-deep", _write_manifest(b"[" * 100000 + b"]" * 100000), "manifest.json"),
    ("schema-missing", _edit_manifest(_delete("schema_version")), "schema"),
    ("schema-2", _edit_manifest(_set("schema_version", 2)), "schema"),
    ("schema-string", _edit_manifest(_set("schema_version", "1")), "schema"),
    *[(f"missing-{key}", _edit_manifest(_delete(key)), key)
      for key in ("inputs", "outputs", "target", "hashes", "sizes", "versions", "build_seconds")],
    ("inputs-dict", _edit_manifest(_set("inputs", {"x": 1})), "inputs"),
    ("inputs-entry-int", _edit_manifest(_set("inputs", [3])), "inputs[0]"),
    ("input-no-name", _edit_manifest(_delete("inputs/0/name")), "inputs[0]"),
    ("input-name-int", _edit_manifest(_set("inputs/0/name", 7)), "inputs[0]"),
    ("input-no-dtype", _edit_manifest(_delete("inputs/0/dtype")), "inputs[0]"),
    ("input-dtype-unknown", _edit_manifest(_set("inputs/0/dtype", "float33")), "float33"),
    ("input-dtype-object", _edit_manifest(_set("inputs/0/dtype", "object")), "object"),
    ("input-shape-string", _edit_manifest(_set("inputs/0/shape", "2,8")), "shape"),
    ("input-shape-negative", _edit_manifest(_set("inputs/0/shape", [2, -8])), "shape"),
    ("input-shape-float", _edit_manifest(_set("inputs/0/shape", [2, 8.5])), "shape"),
    ("input-shape-huge", _edit_manifest(_set("inputs/0/shape", [2, 1 << 62])), "shape"),
    ("input-shape-bool", _edit_manifest(_set("inputs/0/shape", [True, 8])), "shape"),
    ("input-library-dtype-int", _edit_manifest(_set("inputs/0/library_dtype", 5)), "library_dtype"),
    ("output-dtype-unknown", _edit_manifest(_set("outputs/0/dtype", "tensor")), "tensor"),
    ("output-shape-null", _edit_manifest(_set("outputs/0/shape", None)), "shape"),
    ("target-list", _edit_manifest(_set("target", ["host"])), "target"),
    ("target-runner-int", _edit_manifest(_set("target/runner", 1)), "target.runner"),
    ("target-no-arch", _edit_manifest(_delete("target/arch")), "target.arch"),
    ("target-requires-string", _edit_manifest(_set("target/requires", "avx2")), "target.requires"),
    ("target-cores-string", _edit_manifest(_set("target/json/num-cores", "two")), "num-cores"),
    ("hash-missing", _edit_manifest(_delete("hashes/model.so")), "sha256"),
    ("hash-short", _edit_manifest(_set("hashes/model.so", "abc")), "sha256"),
    ("hash-int", _edit_manifest(_set("hashes/model.so", 12)), "sha256"),
    ("hash-other-file", _edit_manifest(_set("hashes/model.so", "0" * 64)), "model.so"),
    ("sizes-string", _edit_manifest(_set("sizes/library_bytes", "big")), "sizes.library_bytes"),
    ("memory-list", _edit_manifest(_set("memory", [1])), "memory"),
    ("build-seconds-string", _edit_manifest(_set("build_seconds", "fast")), "build_seconds"),
    ("separate-weights-string", _edit_manifest(_set("separate_weights", "no")), "separate_weights"),
]


def _weights(action, *args):
    def damage(art: Path, root: Path) -> None:
        action(art / "weights.bin", *args)

    return damage


WEIGHTS_CASES = [
    ("weights-truncated-header", _weights(_truncate, 20), "weights.bin"),
    ("weights-truncated-table", _weights(_truncate, 100), "weights.bin"),
    ("weights-truncated-data", _weights(_truncate, -3), "weights.bin"),
    ("weights-flip-magic", _weights(_flip, 0), "weights.bin"),
    ("weights-flip-count", _weights(_flip, 12), "weights.bin"),
    ("weights-flip-codec", _weights(_flip, 24), "weights.bin"),
    ("weights-flip-dtype", _weights(_flip, 40), "weights.bin"),
    ("weights-flip-offset", _weights(_flip, 40 + 88), "weights.bin"),
    ("weights-flip-data", _weights(_flip, -1), "weights.bin"),
    ("weights-missing", lambda art, root: (art / "weights.bin").unlink(), "weights.bin"),
    ("weights-empty", _weights(_truncate, 0), "weights.bin"),
]

CASES = (
    [pytest.param("plain", *case[1:], id=case[0]) for case in LIBRARY_CASES + MANIFEST_CASES]
    + [pytest.param(kind, *case[1:], id=f"{kind}-{case[0]}") for case in WEIGHTS_CASES
       for kind in ("separate", "compressed")]
)


@pytest.mark.parametrize("command", ["run", "inspect", "export"])
@pytest.mark.parametrize("kind, damage, needle", CASES)
def test_damaged_artifact_is_refused_in_one_line(build_root, tmp_path, capsys, command, kind, damage, needle):
    art = copy_artifact(build_root, kind, tmp_path / "art")
    damage(art, build_root)
    np.savez(tmp_path / "in.npz", x=good_inputs(2))
    out = tmp_path / "bundle"
    argv = {
        "run": ["run", art, "--inputs", tmp_path / "in.npz"],
        "inspect": ["inspect", art],
        "export": ["export", art, "-o", out],
    }[command]
    line = expect_user_error(argv, capsys, tmp_path, out, needle)
    assert "recompile" in line


def test_a_truncated_library_never_reaches_the_loader_in_a_fresh_process(build_root, tmp_path):
    """The audit's SIGBUS: in a subprocess, so that a regression fails this test instead of killing pytest."""
    art = copy_artifact(build_root, "plain", tmp_path / "art")
    _truncate(art / "model.so", 5000)
    np.savez(tmp_path / "in.npz", x=good_inputs(2))
    run = subprocess.run([sys.executable, "-m", "tvmcompress.cli", "run", str(art), "--inputs", str(tmp_path / "in.npz")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "does not match the sha256" in run.stderr and "recompile" in run.stderr


@pytest.mark.parametrize("kind", ["plain", "separate", "compressed"])
def test_an_intact_artifact_still_runs(build_root, tmp_path, capsys, kind):
    """The checks above refuse damage, not artifacts: the same copies run when left alone."""
    from tvmcompress import api

    art = copy_artifact(build_root, kind, tmp_path / "art")
    x = good_inputs(1)
    y = api.load(art).run({"x": x})["y"]
    from .bad_input_support import tiny_model
    import onnxruntime as ort

    session = ort.InferenceSession(tiny_model().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


# weights_file.read itself (used by export, the C API's reader description, and runs without a recorded hash):
# every header field is checked against the file before an allocation depends on it.
def _weights_file(tmp_path: Path, codec: str = "raw") -> Path:
    path = tmp_path / "weights.bin"
    weights_file.write(path, [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(5, np.int8)], codec=codec)
    return path


def _patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


ENTRY0 = 40  # first table entry: dtype(16) ndim(4) reserved(4) shape(64) offset(8) stored(8) nbytes(8)


@pytest.mark.parametrize("codec", ["raw", "tvcw"])
@pytest.mark.parametrize(
    "offset, data, needle",
    [
        pytest.param(12, (10**9).to_bytes(4, "little"), "truncated", id="count-1e9"),
        pytest.param(ENTRY0, b"object\0\0", "dtype", id="dtype-object"),
        pytest.param(ENTRY0, b"\xff\xfe", "dtype", id="dtype-not-ascii"),
        pytest.param(ENTRY0, b"float33\0", "dtype", id="dtype-unknown"),
        pytest.param(ENTRY0 + 16, (9).to_bytes(4, "little"), "dims", id="ndim-9"),
        pytest.param(ENTRY0 + 24, (-3).to_bytes(8, "little", signed=True), "dims", id="shape-negative"),
        pytest.param(ENTRY0 + 24, (1 << 40).to_bytes(8, "little"), "bytes for shape", id="shape-huge"),
        pytest.param(ENTRY0 + 88, (1 << 60).to_bytes(8, "little"), "past the end", id="offset-huge"),
        pytest.param(ENTRY0 + 96, (1 << 60).to_bytes(8, "little"), "past the end", id="stored-huge"),
        pytest.param(ENTRY0 + 104, (1 << 60).to_bytes(8, "little"), "bytes for shape", id="nbytes-huge"),
        pytest.param(24, b"\xff" * 4, "codec", id="codec-not-ascii"),
        pytest.param(24, b"zstd\0", "zstd", id="codec-unknown"),
    ],
)
def test_damaged_weights_file_header_is_refused(tmp_path, codec, offset, data, needle):
    path = _weights_file(tmp_path, codec)
    _patch(path, offset, data)
    with pytest.raises(TvmcompressError, match=needle) as info:
        weights_file.read(path)
    assert "recompile" in str(info.value) or "upgrade" in str(info.value)


def test_damaged_tvcw_tensor_is_refused(tmp_path):
    path = _weights_file(tmp_path, "tvcw")
    _, entries = weights_file.read_header(path)
    blob = path.read_bytes()[entries[0].offset : entries[0].offset + entries[0].stored_bytes]
    assert weight_codec.is_blob(blob)
    _patch(path, entries[0].offset + 8, (1 << 40).to_bytes(8, "little"))  # the blob claims a terabyte
    with pytest.raises(TvmcompressError, match="damaged .*more than the 48 expected.*recompile"):
        weights_file.read(path)
