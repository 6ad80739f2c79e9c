"""Entropy coding of weight bytes for flash-limited devices (`--compress-weights`): our own small coder.

Format "TVCW" v1 (C decoder: tvmcompress/codec/weight_codec.c, described in weight_codec.h):
- byte shuffle: an array of E-byte elements is split into E planes (byte 0 of every element, then byte 1, ...),
  because bytes of equal significance share a distribution (the exponent byte of float32 weights is nearly
  constant, their low mantissa byte is noise);
- or, when an array has at most 256 distinct elements (clustered float weights), a palette of them and one
  plane of 1-byte indices;
- each plane is coded with static order-0 rANS (frequencies normalized to 2^14, 32-bit state, byte
  renormalization; Duda's asymmetric numeral systems as in ryg_rans), or stored when that is not smaller.
Why rANS and not Huffman: pruned, clustered int8 weights are mostly zeros, and Huffman spends at least one bit
per symbol where rANS spends -log2(p) (0.32 bit for p = 0.8). Why not zstd: the device needs a decoder, and
ours is ~100 lines of C with no allocation.

Encoding and decoding here are plain Python loops, ~1 us per coded byte: fine for the small models this is
for; planes that would not shrink are stored without running the coder.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["encode", "decode", "encode_array", "decoded_size", "is_blob", "CodecError", "MAGIC"]

MAGIC = b"TVCW"
VERSION = 1
PROB_BITS = 14
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 23
_HEADER = struct.Struct("<4sBBBBQ")  # magic, version, element size, layout, reserved, decoded length
_LAYOUT_PLANES, _LAYOUT_PALETTE = 0, 1
_METHOD_STORED, _METHOD_RANS = 0, 1
# decode()'s bound on the decoded size when the caller gives none (weights files give each tensor's own).
DEFAULT_MAX_SIZE = 1 << 30
# A plane whose order-0 entropy promises less than this saving is stored without running the coder.
_MIN_GAIN = 0.02


class CodecError(ValueError):
    """A blob that is not TVCW v1 or is corrupt."""


def _normalized_frequencies(counts: np.ndarray) -> np.ndarray:
    """Counts of 256 byte values -> frequencies summing to PROB_SCALE, every present symbol at least 1."""
    present = counts > 0
    freq = np.zeros(256, np.int64)
    freq[present] = np.maximum(1, np.round(counts[present] * PROB_SCALE / counts.sum()).astype(np.int64))
    # Rounding leaves the sum a little off: take it from (or give it to) the most frequent symbol.
    freq[int(np.argmax(freq))] += PROB_SCALE - int(freq.sum())
    return freq


def _encode_rans(plane: bytes, freq: np.ndarray) -> bytes:
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    freq_l, cum_l = freq.tolist(), cum.tolist()
    bound = [((RANS_L >> PROB_BITS) << 8) * f for f in freq_l]
    x, out = RANS_L, bytearray()
    append = out.append
    for s in reversed(plane):  # rANS is last-in first-out: encode backwards so that decoding runs forwards
        f = freq_l[s]
        while x >= bound[s]:
            append(x & 0xFF)
            x >>= 8
        x = ((x // f) << PROB_BITS) + (x % f) + cum_l[s]
    out.reverse()
    return struct.pack("<I", x) + bytes(out)


def _decode_rans(stream: memoryview, freq: np.ndarray, count: int) -> bytes:
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    slot_symbol = np.repeat(np.arange(256), freq).tolist()
    freq_l, cum_l = freq.tolist(), cum.tolist()
    if len(stream) < 4:
        raise CodecError("rANS stream shorter than its state")
    x = int.from_bytes(stream[:4], "little")
    pos, end, out = 4, len(stream), bytearray(count)
    mask = PROB_SCALE - 1
    for i in range(count):
        slot = x & mask
        s = slot_symbol[slot]
        out[i] = s
        x = freq_l[s] * (x >> PROB_BITS) + slot - cum_l[s]
        while x < RANS_L:
            if pos == end:
                raise CodecError("rANS stream truncated")
            x = (x << 8) | stream[pos]
            pos += 1
    return bytes(out)


def _encode_plane(plane: bytes) -> bytes:
    stored = bytes([_METHOD_STORED]) + plane
    if not plane:
        return stored
    counts = np.bincount(np.frombuffer(plane, np.uint8), minlength=256)
    p = counts[counts > 0] / len(plane)
    table_bytes = 2 + 3 * len(p) + 4
    estimate = float(-(p * np.log2(p)).sum()) * len(plane) / 8 + table_bytes
    if estimate > (1 - _MIN_GAIN) * len(plane):
        return stored
    freq = _normalized_frequencies(counts)
    symbols = np.nonzero(freq)[0]
    table = struct.pack("<H", len(symbols)) + b"".join(struct.pack("<BH", s, freq[s]) for s in symbols)
    stream = _encode_rans(plane, freq)
    coded = bytes([_METHOD_RANS]) + table + struct.pack("<I", len(stream)) + stream
    return coded if len(coded) < len(stored) else stored


def encode(data: bytes, element_size: int = 1) -> bytes:
    """A TVCW blob of `data`, byte-shuffled into `element_size` planes (1, 2, 4 or 8; `data`'s length must
    be a multiple of it). Deterministic: the same bytes give the same blob."""
    if element_size not in (1, 2, 4, 8) or len(data) % element_size:
        raise ValueError(f"element size {element_size} does not divide {len(data)} bytes (use 1, 2, 4 or 8)")
    raw = np.frombuffer(data, np.uint8).reshape(-1, element_size)
    planes = [_encode_plane(raw[:, p].tobytes()) for p in range(element_size)]
    best = _HEADER.pack(MAGIC, VERSION, element_size, _LAYOUT_PLANES, 0, len(data)) + b"".join(planes)
    if element_size > 1 and len(raw):
        # Few distinct elements (clustered float32 weights: 16) are coded as one byte of index each; byte planes
        # would spend a few bits per plane on what is one choice among 16.
        view = raw.view(np.dtype((np.void, element_size))).ravel()
        palette, indices = np.unique(view, return_inverse=True)
        if len(palette) <= 256:
            coded = (_HEADER.pack(MAGIC, VERSION, element_size, _LAYOUT_PALETTE, 0, len(data))
                     + struct.pack("<H", len(palette)) + palette.tobytes()
                     + _encode_plane(indices.astype(np.uint8).tobytes()))
            best = coded if len(coded) < len(best) else best
    return best


def encode_array(array: np.ndarray) -> bytes:
    """A TVCW blob of an array's C-order bytes, shuffled by its item size."""
    array = np.ascontiguousarray(array)
    size = array.dtype.itemsize if array.dtype.itemsize in (1, 2, 4, 8) else 1
    return encode(array.tobytes(), size)


def is_blob(blob: bytes) -> bool:
    return len(blob) >= _HEADER.size and bytes(blob[:4]) == MAGIC


def decoded_size(blob: bytes) -> int:
    if not is_blob(blob):
        raise CodecError("not a TVCW blob (bad magic)")
    _, version, element_size, layout, _, length = _HEADER.unpack_from(blob)
    if version != VERSION or element_size not in (1, 2, 4, 8) or length % element_size or layout > _LAYOUT_PALETTE:
        raise CodecError(f"unsupported TVCW blob: version {version}, element size {element_size}")
    return length


def _decode_plane(view: memoryview, pos: int, count: int) -> tuple[np.ndarray, int]:
    """(plane bytes, position after it) of the plane starting at view[pos]."""
    method = view[pos]
    pos += 1
    if method == _METHOD_STORED:
        if len(view) - pos < count:
            raise CodecError("stored plane truncated")
        return np.frombuffer(view[pos : pos + count], np.uint8), pos + count
    if method != _METHOD_RANS:
        raise CodecError(f"unknown plane method {method}")
    (n,) = struct.unpack_from("<H", view, pos)
    if n == 0 or n > 256:
        raise CodecError(f"rANS table of {n} symbols")
    freq = np.zeros(256, np.int64)
    previous = -1
    for i in range(n):
        symbol, f = struct.unpack_from("<BH", view, pos + 2 + 3 * i)
        # The table lists each present symbol once, in ascending order, with a nonzero frequency (as the encoder
        # writes it and the C decoder requires): anything else would decode differently in the two.
        if symbol <= previous or f == 0:
            raise CodecError("rANS table not ascending or with a zero frequency")
        freq[symbol], previous = f, symbol
    pos += 2 + 3 * n
    if freq.sum() != PROB_SCALE:
        raise CodecError("rANS frequencies do not sum to 2^14")
    (m,) = struct.unpack_from("<I", view, pos)
    pos += 4
    if len(view) - pos < m:
        raise CodecError("rANS stream truncated")
    return np.frombuffer(_decode_rans(view[pos : pos + m], freq, count), np.uint8), pos + m


def decode(blob: bytes, max_size: int | None = None) -> bytes:
    """The bytes a TVCW blob encodes. Raises CodecError on a corrupt or foreign blob.

    `max_size`: the most bytes the caller expects (a weights file entry's decoded size), like the C decoder's
    capacity; None allows DEFAULT_MAX_SIZE. A blob whose header declares more is refused before any
    allocation: a constant plane decodes any length from 9 bytes, so the blob's own size bounds nothing.
    """
    view = memoryview(blob)
    length = decoded_size(blob)
    limit = DEFAULT_MAX_SIZE if max_size is None else max_size
    if length > limit:
        raise CodecError(f"the blob declares {length} decoded bytes, more than the {limit} expected")
    element_size, layout = blob[5], blob[6]
    count, pos = length // element_size, _HEADER.size
    try:
        if layout == _LAYOUT_PALETTE:
            (n,) = struct.unpack_from("<H", view, pos)
            if n == 0 or n > 256:
                raise CodecError(f"palette of {n} elements")
            if len(view) - (pos + 2) < n * element_size:
                raise CodecError("palette truncated")
            palette = np.frombuffer(view[pos + 2 : pos + 2 + n * element_size], np.uint8).reshape(n, element_size)
            indices, pos = _decode_plane(view, pos + 2 + n * element_size, count)
            if count and int(indices.max()) >= n:
                raise CodecError("palette index out of range")
            out = palette[indices]
        else:
            out = np.empty((count, element_size), np.uint8)
            for p in range(element_size):
                out[:, p], pos = _decode_plane(view, pos, count)
    except (struct.error, IndexError) as err:
        raise CodecError(f"TVCW blob truncated: {err}") from None
    if pos != len(view):
        raise CodecError(f"{len(view) - pos} trailing bytes after the TVCW blob")
    return out.tobytes()
