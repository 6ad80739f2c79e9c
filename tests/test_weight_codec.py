"""The weight codec: Python encode/decode round trips, and the C decoder (host cc, and aarch64 under qemu)
decoding what Python encoded, byte for byte."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tvmcompress import weight_codec

CODEC_DIR = Path(weight_codec.__file__).parent / "codec"
SOURCES = [CODEC_DIR / "weight_codec.c", CODEC_DIR / "tvcw_decode_main.c"]


def _samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sparse_int8 = np.where(rng.random(20000) < 0.8, 0, rng.integers(-8, 8, 20000)).astype(np.int8)
    return {
        "empty": np.zeros(0, np.uint8),
        "one_symbol": np.full(1000, 7, np.int8),
        "sparse_int8_16_values": sparse_int8,
        "all_256_bytes": rng.integers(0, 256, 5000).astype(np.uint8),
        "float32_normal": rng.normal(size=4096).astype(np.float32),
        "float32_mostly_zero": np.where(rng.random(4096) < 0.9, 0, rng.normal(size=4096)).astype(np.float32),
        "odd_length_text": np.frombuffer(b"abracadabra " * 77 + b"!", np.uint8),
        "float32_16_values": rng.normal(size=16).astype(np.float32)[rng.integers(0, 16, 3000)],
        "float32_16_values_sparse": np.where(rng.random(3000) < 0.7, 0, rng.normal(size=16).astype(np.float32)[rng.integers(0, 16, 3000)]).astype(np.float32),
    }


@pytest.mark.parametrize("name", list(_samples()))
def test_python_round_trip(name):
    array = _samples()[name]
    blob = weight_codec.encode_array(array)
    assert weight_codec.decode(blob) == array.tobytes()
    assert weight_codec.decoded_size(blob) == array.nbytes


def test_sparse_int8_codes_near_its_entropy():
    array = _samples()["sparse_int8_16_values"]
    # 80% zeros, 16 equiprobable values otherwise: H = h(0.2) + 0.2 * 4 ~ 1.52 bit/byte -> ~3800 bytes;
    # Huffman could not go below 1 bit/byte (2500 bytes for zeros alone plus the rest ~ 5000).
    assert len(weight_codec.encode_array(array)) < 0.2 * array.nbytes


def test_few_distinct_floats_are_coded_as_palette_indices():
    array = _samples()["float32_16_values"]
    blob = weight_codec.encode_array(array)
    assert blob[6] == 1  # palette layout
    # 3000 uniform choices among 16: 4 bits each (1500 bytes) + 64 bytes of palette + tables.
    assert len(blob) < 1650


def test_incompressible_planes_are_stored():
    array = _samples()["all_256_bytes"]
    assert len(weight_codec.encode_array(array)) == array.nbytes + 16 + 1  # header + one method byte


def test_corrupt_blobs_raise_codec_errors():
    blob = weight_codec.encode_array(_samples()["sparse_int8_16_values"])
    with pytest.raises(weight_codec.CodecError, match="bad magic"):
        weight_codec.decode(b"XXXX" + blob[4:])
    with pytest.raises(weight_codec.CodecError, match="truncated"):
        weight_codec.decode(blob[:-100])
    with pytest.raises(weight_codec.CodecError, match="trailing bytes"):
        weight_codec.decode(blob + b"\0")


def _compile(compiler: str, out: Path) -> Path:
    subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Werror", "-I", str(CODEC_DIR), *map(str, SOURCES),
                    "-o", str(out)], check=True, capture_output=True)
    return out


def _c_round_trip(runner: list[str], binary: Path, tmp_path: Path) -> None:
    for name, array in _samples().items():
        blob_path, out_path = tmp_path / f"{name}.tvcw", tmp_path / f"{name}.raw"
        blob_path.write_bytes(weight_codec.encode_array(array))
        subprocess.run([*runner, str(binary), str(blob_path), str(out_path)], check=True, timeout=60)
        assert out_path.read_bytes() == array.tobytes(), name
    corrupt = tmp_path / "corrupt.tvcw"
    corrupt.write_bytes(weight_codec.encode_array(_samples()["sparse_int8_16_values"])[:-50])
    result = subprocess.run([*runner, str(binary), str(corrupt), str(tmp_path / "x")], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip() == "error -2"  # TVCW_ERR_TRUNCATED


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a host C compiler")
def test_c_decoder_matches_python_on_host(tmp_path):
    _c_round_trip([], _compile("cc", tmp_path / "tvcw_decode"), tmp_path)


@pytest.mark.cross
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64")
def test_c_decoder_matches_python_on_aarch64_under_qemu(tmp_path):
    binary = _compile("aarch64-linux-gnu-gcc", tmp_path / "tvcw_decode_aarch64")
    _c_round_trip(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"], binary, tmp_path)
