"""weights.bin: a model's weights outside its library (`compile --separate-weights`), for devices that keep
weights in their own flash partition. Written here, read here (Artifact.run) and by the C API of a deploy
bundle (deploy_templates/weights_reader.h), which must agree byte for byte with this description.

Layout, all integers little-endian:

    offset  size  field
    0       8     magic b"TVMCWTS1"
    8       4     u32 format version (1)
    12      4     u32 tensor count N
    16      4     u32 alignment A of every tensor's data offset (64)
    20      4     u32 reserved (0)
    24      16    codec name, ASCII, NUL-padded: "raw" (bytes as they are); see `decode`
    40      N*112 one entry per tensor, in the order `main` takes them after the model's inputs:
                    16   dtype, ASCII, NUL-padded ("float32", "int8", ...)
                    4    u32 ndim (at most 8)
                    4    u32 reserved (0)
                    64   8 x i64 shape (unused dims 0)
                    8    u64 offset of the data from the start of the file (a multiple of A)
                    8    u64 stored bytes (what the codec reads)
                    8    u64 decoded bytes (prod(shape) * dtype size; row-major, little-endian)
    ...           data, each tensor at its offset; zero padding between

The codec applies per tensor. To add one, extend `encode`/`decode` here and `tvmc_weights_decode` in
weights_reader.h: both reject codecs they do not know with a message naming it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import TvmcompressError

MAGIC = b"TVMCWTS1"
VERSION = 1
ALIGNMENT = 64
MAX_NDIM = 8
CODECS = ("raw", "tvcw")  # tvcw: tvmcompress/weight_codec.py (rANS; C decoder in tvmcompress/codec/)
_HEADER = struct.Struct("<8sIIII16s")
_ENTRY = struct.Struct("<16sII8qQQQ")


@dataclass(frozen=True)
class WeightEntry:
    dtype: str
    shape: tuple[int, ...]
    offset: int
    stored_bytes: int
    nbytes: int


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _dtype_name(array: np.ndarray) -> str:
    return "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name


def encode(codec: str, raw: bytes, element_size: int = 1) -> bytes:
    """The stored form of one tensor's row-major little-endian bytes (`element_size`: its dtype's size)."""
    if codec == "raw":
        return raw
    if codec == "tvcw":
        from . import weight_codec

        return weight_codec.encode(raw, element_size if element_size in (1, 2, 4, 8) else 1)
    raise TvmcompressError(f"unknown weights codec '{codec}': use one of {', '.join(CODECS)}")


def decode(codec: str, stored: bytes, nbytes: int, path: str = "weights file") -> bytes:
    """Inverse of `encode`; `nbytes` is the decoded size the entry declares."""
    if codec == "raw":
        if len(stored) != nbytes:
            raise TvmcompressError(f"{path} is damaged (a tensor holds {len(stored)} bytes, not {nbytes}): recompile")
        return stored
    if codec == "tvcw":
        from . import weight_codec

        try:
            decoded = weight_codec.decode(stored, max_size=nbytes)
        except weight_codec.CodecError as err:
            raise TvmcompressError(f"{path} is damaged ({err}): recompile") from None
        if len(decoded) != nbytes:
            raise TvmcompressError(f"{path} is damaged (a tensor decodes to {len(decoded)} bytes, not {nbytes}): recompile")
        return decoded
    raise TvmcompressError(
        f"{path} uses weights codec '{codec}', which this tvmcompress cannot decode (it knows {', '.join(CODECS)}): "
        "upgrade tvmcompress or recompile the model"
    )


def write(path: str | os.PathLike, arrays: Sequence[np.ndarray], codec: str = "raw") -> list[WeightEntry]:
    """Write `arrays` (in main's parameter order) to `path`; returns the entries of its header."""
    if codec not in CODECS:
        encode(codec, b"")  # raises the unknown-codec error
    blobs, entries = [], []
    offset = _align(_HEADER.size + _ENTRY.size * len(arrays))
    for array in arrays:
        array = np.asarray(array)
        if array.ndim > MAX_NDIM:
            raise ValueError(f"a weight has {array.ndim} dimensions; the weights file holds at most {MAX_NDIM}")
        raw = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()
        stored = encode(codec, raw, array.dtype.itemsize)
        entries.append(WeightEntry(_dtype_name(array), tuple(array.shape), offset, len(stored), len(raw)))
        blobs.append(stored)
        offset = _align(offset + len(stored))
    with open(path, "wb") as f:
        f.write(_HEADER.pack(MAGIC, VERSION, len(arrays), ALIGNMENT, 0, codec.encode()))
        for e in entries:
            shape = list(e.shape) + [0] * (MAX_NDIM - len(e.shape))
            f.write(_ENTRY.pack(e.dtype.encode(), len(e.shape), 0, *shape, e.offset, e.stored_bytes, e.nbytes))
        for entry, blob in zip(entries, blobs):
            f.write(b"\0" * (entry.offset - f.tell()))
            f.write(blob)
    return entries


def read_header(path: str | os.PathLike) -> tuple[str, list[WeightEntry]]:
    """(codec, entries) of a weights file; a TvmcompressError if it is not one or is damaged."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or head[:8] != MAGIC:
                raise TvmcompressError(f"{path} is not a tvmcompress weights file (bad magic): recompile the model")
            _, version, count, _alignment, _, codec = _HEADER.unpack(head)
            if version != VERSION:
                raise TvmcompressError(f"{path} has weights format {version}, not {VERSION}: recompile the model")
            size = os.fstat(f.fileno()).st_size
            # Bound the read by the file: a damaged count must not ask for gigabytes.
            table = f.read(min(_ENTRY.size * count, size))
    except OSError as err:
        raise TvmcompressError(f"cannot read weights file {path}: {err.strerror}") from None
    if len(table) != _ENTRY.size * count:
        raise TvmcompressError(f"{path} is truncated: recompile the model")
    entries = []
    for index in range(count):
        dtype, ndim, _, *rest = _ENTRY.unpack_from(table, index * _ENTRY.size)
        shape, (offset, stored, nbytes) = rest[:MAX_NDIM], rest[MAX_NDIM:]
        problem = _entry_problem(dtype, ndim, shape, offset, stored, nbytes, size)
        if problem:
            raise TvmcompressError(f"{path} is damaged (entry {index}: {problem}): recompile the model")
        entries.append(WeightEntry(dtype.rstrip(b"\0").decode(), tuple(shape[:ndim]), offset, stored, nbytes))
    try:
        return codec.rstrip(b"\0").decode("ascii"), entries
    except UnicodeDecodeError:
        raise TvmcompressError(f"{path} is damaged (its codec name is not ASCII): recompile the model") from None


def _entry_problem(dtype: bytes, ndim: int, shape, offset: int, stored: int, nbytes: int, size: int) -> str | None:
    """What makes a table entry impossible to read, or None: every field is checked against the file before
    any allocation depends on it."""
    if ndim > MAX_NDIM or any(d < 0 for d in shape[:ndim]):
        return f"{ndim} dims of shape {list(shape[:ndim])}"
    if offset + stored > size:
        return "data past the end of the file"
    try:
        name = dtype.rstrip(b"\0").decode("ascii")
        kind = _numpy_dtype(name) if name.isidentifier() else None
        numeric = kind is not None and (kind.kind in "biuf" or kind.type.__module__.startswith("ml_dtypes"))
        itemsize = kind.itemsize if numeric else 0
    except (UnicodeDecodeError, TypeError, AttributeError):
        itemsize = 0
    if itemsize == 0:
        return f"unknown dtype {dtype.rstrip(bytes(1))!r}"
    count = 1
    for d in shape[:ndim]:
        count *= d
    if count * itemsize != nbytes:
        return f"{nbytes} bytes for shape {list(shape[:ndim])}"
    return None


def read(path: str | os.PathLike) -> list[np.ndarray]:
    """Every tensor of a weights file, decoded, in order."""
    codec, entries = read_header(path)
    arrays = []
    with open(path, "rb") as f:
        for entry in entries:
            f.seek(entry.offset)
            raw = decode(codec, f.read(entry.stored_bytes), entry.nbytes, os.fspath(path))
            dtype = _numpy_dtype(entry.dtype).newbyteorder("<")
            arrays.append(np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy())
    return arrays


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
