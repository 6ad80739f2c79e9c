"""The bundle's C reader of weights.bin (deploy_templates/weights_reader.h) against damaged files.

weights_reader_check.c, built with -fsanitize=address,undefined, opens a file with the reader and decodes every
tensor into a heap buffer of exactly the entry's size. Each damage to the header, an entry (offset, sizes, dtype,
shape, rank, count) or the data must be refused by the C reader exactly when the Python reader
(tvmcompress/weights_file.py) refuses it, with no sanitizer report: the C reader never reads or writes past a
buffer, whatever the file says. The bundle runner built with ASan on a damaged weights.bin is in
tests/robustness/test_bundle_asan.py (slow).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tvmcompress import weights_file
from tvmcompress.errors import TvmcompressError

HERE = Path(__file__).parent
REPO = HERE.parent.parent
TEMPLATES = REPO / "tvmcompress" / "deploy_templates"
CODEC_DIR = REPO / "tvmcompress" / "codec"
HEADER, ENTRY = 40, 112  # weights_file's layout: entry i starts at HEADER + i * ENTRY


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((3, 5)).astype(np.float32), np.arange(7, dtype=np.int8),
            rng.integers(-9, 9, (2, 2, 2)).astype(np.int64)]


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("reader") / "weights_reader_check"
    subprocess.run(
        [gcc, "-std=c99", "-Wall", "-Werror", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         f"-I{TEMPLATES}", f"-I{CODEC_DIR}", str(HERE / "weights_reader_check.c"), str(CODEC_DIR / "weight_codec.c"),
         "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


def _c_read(exe: Path, path: Path) -> str:
    """The reader's one line ("ok N SUM" or "error MESSAGE"); fails on a crash or any sanitizer output."""
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    run = subprocess.run([str(exe), str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0 and run.stderr == "", f"{path.name}: exit {run.returncode}\n{run.stderr[-3000:]}"
    assert run.stdout.count("\n") == 1
    return run.stdout.strip()


def _python_accepts(path: Path) -> bool:
    try:
        weights_file.read(path)
    except TvmcompressError:
        return False
    return True


def _put(data: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _entry(index: int, field: str) -> tuple[int, str]:
    """(file offset, struct format) of one field of table entry `index`."""
    base = HEADER + index * ENTRY
    return {"dtype": (base, "16s"), "ndim": (base + 16, "<I"), "shape": (base + 24, "<8q"),
            "offset": (base + 88, "<Q"), "stored": (base + 96, "<Q"), "nbytes": (base + 104, "<Q")}[field]


def _damage(good: bytes) -> dict[str, bytes]:
    """Named damaged copies of a valid weights.bin of _arrays() (entry 1 is int8 (7,), entry 2 int64 (2,2,2))."""
    size = len(good)
    off1 = struct.unpack_from("<Q", good, _entry(1, "offset")[0])[0]
    cases = {
        "count-huge": _put(good, 12, "<I", 0xFFFFFFFF),
        "count-one-more": _put(good, 12, "<I", 4),
        "offset-past-end": _put(good, *_entry(1, "offset"), size + 64),
        "offset-wraps": _put(good, *_entry(1, "offset"), 2**64 - 8),
        "offset-at-end": _put(good, *_entry(2, "offset"), size),
        "stored-past-end": _put(good, *_entry(1, "stored"), size - off1 + 1),
        "stored-wraps": _put(good, *_entry(1, "stored"), 2**64 - 1),
        "nbytes-larger-than-shape": _put(good, *_entry(1, "nbytes"), 8),
        "nbytes-huge": _put(good, *_entry(0, "nbytes"), 2**62),
        "nbytes-zero": _put(good, *_entry(2, "nbytes"), 0),
        "shape-negative": _put(good, *_entry(1, "shape"), -7, 0, 0, 0, 0, 0, 0, 0),
        # 2**31 * 2**31 * 2**2 elements of 8 bytes: 2**67 bytes, which wraps to 0 in 64 bits; nbytes 0 agrees
        # with the wrapped product, so only an overflow check refuses it.
        "shape-product-overflows": _put(_put(_put(good, *_entry(2, "shape"), 2**31, 2**31, 4, 0, 0, 0, 0, 0),
                                             *_entry(2, "nbytes"), 0), *_entry(2, "stored"), 0),
        "shape-grows-to-match-nbytes": _put(good, *_entry(1, "shape"), 8, 0, 0, 0, 0, 0, 0, 0),
        "ndim-9": _put(good, *_entry(0, "ndim"), 9),
        "ndim-huge": _put(good, *_entry(0, "ndim"), 0xFFFFFFFF),
        "dtype-unknown": _put(good, *_entry(0, "dtype"), b"complex64"),
        "dtype-not-terminated": _put(good, *_entry(0, "dtype"), b"float32float32xx"),
        "dtype-smaller": _put(good, *_entry(0, "dtype"), b"float16"),
        "codec-unknown": _put(good, 24, "16s", b"zstd"),
        "magic": b"TVMCWTS0" + good[8:],
        "version": _put(good, 8, "<I", 2),
        "empty": b"",
    }
    for cut in (7, 39, 41, HEADER + ENTRY, off1 - 1, off1 + 3, size - 1):
        cases[f"truncated-{cut}"] = good[:cut]
    return cases


@pytest.mark.parametrize("codec", ["raw", "tvcw"])
def test_c_reader_refuses_what_the_python_reader_refuses_and_stays_in_bounds(reader, codec, tmp_path):
    path = tmp_path / "weights.bin"
    weights_file.write(path, _arrays(), codec=codec)
    good = path.read_bytes()
    expected_sum = sum(int(np.frombuffer(a.astype(a.dtype.newbyteorder("<")).tobytes(), np.uint8).sum())
                       for a in _arrays())
    assert _c_read(reader, path) == f"ok 3 {expected_sum}"
    refused = {}
    for name, content in _damage(good).items():
        path.write_bytes(content)
        line = _c_read(reader, path)
        assert line.startswith("error ") == (not _python_accepts(path)), f"{name}: C says {line!r}"
        refused[name] = line
    # Every case above is real damage: both readers refuse all of them.
    assert all(line.startswith("error ") for line in refused.values()), refused
    assert "bad magic" in refused["magic"] and "unknown codec: zstd" in refused["codec-unknown"]
    assert "truncated or damaged" in refused["shape-product-overflows"]


def test_c_reader_refuses_flipped_tvcw_data_like_the_python_reader(reader, tmp_path):
    """Byte flips in the entropy-coded data: whichever the Python reader refuses, the C reader refuses, and
    what both accept decodes to the same bytes count (the ASan build sees every read)."""
    path = tmp_path / "weights.bin"
    weights_file.write(path, _arrays(), codec="tvcw")
    good = bytearray(path.read_bytes())
    data_start = struct.unpack_from("<Q", good, _entry(0, "offset")[0])[0]
    rng = np.random.default_rng(7)
    disagreements = []
    for trial in range(40):
        damaged = bytearray(good)
        for pos in rng.integers(data_start, len(good), size=1 + trial % 3):
            damaged[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(damaged))
        line = _c_read(reader, path)
        if line.startswith("error ") == _python_accepts(path):
            disagreements.append((trial, line))
    assert disagreements == []
