"""Weight-blob fuzzer: the Python (tvmcompress/weight_codec.py) and C (tvmcompress/codec/) TVCW decoders must
reject the same damaged blobs, with a CodecError and never a MemoryError/ValueError/IndexError, and decode the
others to the same bytes.

Blobs: valid encodings of typical weights (float32 normal, clustered palette, sparse int8, constant planes,
every element size), then fixed-seed byte flips (biased to the header and the tables), truncations, insertions,
header-field rewrites and random bytes. 300 blobs in the default suite, 6,000 (and an ASan/UBSan build of the C
decoder) in the slow tier. Both decoders get the same capacity: CAPACITY bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tvmcompress import weight_codec
from tvmcompress.weight_codec import CodecError

CODEC_DIR = Path(weight_codec.__file__).parent / "codec"
DRIVER = Path(__file__).parent / "tvcw_batch_decode.c"
# What both decoders may produce: blobs of the seeds decode to at most 8 KiB; a damaged length field may claim
# more, which both must refuse (C: TVCW_ERR_CAPACITY) instead of allocating it.
CAPACITY = 1 << 15


def _seed_blobs() -> list[bytes]:
    rng = np.random.default_rng(2026)
    arrays = [
        rng.normal(0, 0.05, 512).astype(np.float32),  # byte planes, low planes stored, exponent plane coded
        rng.choice(rng.normal(0, 0.1, 16).astype(np.float32), 1024),  # clustered: palette layout
        np.where(rng.random(2048) < 0.8, 0, rng.integers(-127, 128, 2048)).astype(np.int8),  # sparse: rANS
        np.zeros(777, np.int8),  # one-symbol plane: 777 bytes from a 9-byte stream
        rng.integers(0, 4, 300).astype(np.int16),
        rng.normal(0, 1, 64).astype(np.float64),
        np.arange(40, dtype=np.uint8),  # stored plane
        np.zeros(0, np.float32),  # empty
        rng.choice(np.array([0.5, -0.25], np.float16), 400),
    ]
    blobs = [weight_codec.encode_array(a) for a in arrays]
    blobs.append(weight_codec.encode(bytes(rng.integers(0, 3, 3000, dtype=np.uint8)), 1))
    return blobs


def _mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(blob)
    kind = int(rng.integers(0, 8))
    if kind == 0 and data:  # flip bits anywhere
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1 and len(data) > 16:  # one byte of the header or the first table
        data[int(rng.integers(4, min(len(data), 48)))] = int(rng.integers(0, 256))
    elif kind == 2:  # truncation
        data = data[: int(rng.integers(0, len(data) + 1))]
    elif kind == 3:  # bytes inserted
        at = int(rng.integers(0, len(data) + 1))
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes()
    elif kind == 4 and len(data) >= 16:  # decoded length rewritten: small, huge, odd
        lengths = [0, 1, 3, 7, len(blob), 1 << 20, 1 << 40, (1 << 63) + 8, (1 << 64) - 8]
        length = lengths[int(rng.integers(0, len(lengths)))]
        data[8:16] = struct.pack("<Q", length)
    elif kind == 5 and len(data) >= 16:  # element size / layout / version
        data[int(rng.choice([4, 5, 6]))] = int(rng.choice([0, 1, 2, 3, 4, 8, 255]))
    elif kind == 6:  # random bytes behind a valid magic
        data = bytearray(b"TVCW" + rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes())
    else:  # a u16/u32 count inside the body set to an extreme
        if len(data) > 20:
            at = int(rng.integers(16, len(data) - 2))
            data[at : at + 2] = struct.pack("<H", int(rng.choice([0, 1, 255, 256, 257, 65535])))
    return bytes(data)


def fuzz_blobs(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    seeds = _seed_blobs()
    blobs = list(seeds)
    while len(blobs) < count:
        blob = seeds[int(rng.integers(0, len(seeds)))]
        for _ in range(int(rng.integers(1, 3))):  # sometimes two mutations on top of each other
            blob = _mutate(blob, rng)
        blobs.append(blob)
    return blobs


def _python_decode(blob: bytes) -> bytes | None:
    """The decoded bytes, or None for a rejected blob; any exception other than CodecError fails the test."""
    try:
        return weight_codec.decode(blob, max_size=CAPACITY)
    except CodecError:
        return None


def _build_driver(tmp_path: Path, sanitize: bool) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path / ("tvcw_batch_asan" if sanitize else "tvcw_batch")
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"] if sanitize else ["-O2"]
    subprocess.run(
        [gcc, "-std=c99", "-Wall", "-Werror", *flags, f"-I{CODEC_DIR}", str(DRIVER),
         str(CODEC_DIR / "weight_codec.c"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


def _c_decode_all(exe: Path, blobs: list[bytes], tmp_path: Path) -> list[bytes | None]:
    records, results = tmp_path / "records.bin", tmp_path / "results.bin"
    with open(records, "wb") as f:
        for blob in blobs:
            f.write(struct.pack("<II", CAPACITY, len(blob)) + blob)
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    run = subprocess.run([str(exe), str(records), str(results)], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stderr == "", f"C decoder driver failed ({run.returncode}):\n{run.stderr[-3000:]}"
    out, data, pos = [], results.read_bytes(), 0
    for _ in blobs:
        (result,) = struct.unpack_from("=q", data, pos)
        pos += 8
        if result < 0:
            out.append(None)
        else:
            out.append(data[pos : pos + result])
            pos += result
    assert pos == len(data)
    return out


def _check_agreement(blobs: list[bytes], c_results: list[bytes | None]) -> tuple[int, int]:
    accepted = 0
    for index, (blob, c_result) in enumerate(zip(blobs, c_results)):
        py_result = _python_decode(blob)
        assert py_result == c_result, (
            f"blob {index} ({blob[:24].hex()}..., {len(blob)} B): Python "
            f"{'rejects' if py_result is None else f'gives {len(py_result)} B'}, C "
            f"{'rejects' if c_result is None else f'gives {len(c_result)} B'}"
        )
        accepted += py_result is not None
    return accepted, len(blobs) - accepted


def test_seed_blobs_round_trip_in_both_decoders(tmp_path):
    seeds = _seed_blobs()
    exe = _build_driver(tmp_path, sanitize=False)
    c_results = _c_decode_all(exe, seeds, tmp_path)
    assert all(result is not None for result in c_results)
    assert [_python_decode(b) for b in seeds] == c_results


def test_fuzzed_blobs_python_and_c_decoders_agree(tmp_path):
    blobs = fuzz_blobs(300, seed=18)
    exe = _build_driver(tmp_path, sanitize=False)
    accepted, rejected = _check_agreement(blobs, _c_decode_all(exe, blobs, tmp_path))
    # The mix must exercise both outcomes, or the agreement says little.
    assert accepted >= 20 and rejected >= 150, (accepted, rejected)


@pytest.mark.slow
def test_6000_fuzzed_blobs_agree_and_the_c_decoder_is_asan_clean(tmp_path):
    blobs = fuzz_blobs(6000, seed=1807)
    plain = _c_decode_all(_build_driver(tmp_path, sanitize=False), blobs, tmp_path)
    sanitized = _c_decode_all(_build_driver(tmp_path, sanitize=True), blobs, tmp_path)
    assert sanitized == plain
    accepted, rejected = _check_agreement(blobs, plain)
    assert accepted >= 300 and rejected >= 3000, (accepted, rejected)


@pytest.mark.parametrize(
    "header_length, why",
    [(1 << 40, "a terabyte"), ((1 << 63) + 8, "past int64"), ((1 << 64) - 8, "u64 max")],
)
def test_a_huge_declared_length_is_refused_before_allocation(header_length, why):
    blob = bytearray(weight_codec.encode(bytes(777), 1))  # a one-symbol plane: any length decodes from it
    blob[8:16] = struct.pack("<Q", header_length)
    with pytest.raises(CodecError, match="declares .* decoded bytes, more than"):
        weight_codec.decode(bytes(blob))


def test_table_out_of_order_is_refused_by_both(tmp_path):
    """Symbols listed descending: C used the table order, Python the symbol order, so both decoded it, to
    different bytes. Now both refuse it."""
    blob = bytearray(weight_codec.encode(bytes([1, 2] * 200 + [2] * 300), 1))
    assert blob[16] == 1  # rANS plane: u16 n = 2, then (symbol, freq) pairs at 19 and 22
    (n,) = struct.unpack_from("<H", blob, 17)
    assert n == 2
    blob[19:25] = blob[22:25] + blob[19:22]
    blob = bytes(blob)
    with pytest.raises(CodecError, match="ascending"):
        weight_codec.decode(blob)
    assert _c_decode_all(_build_driver(tmp_path, sanitize=False), [blob], tmp_path) == [None]
