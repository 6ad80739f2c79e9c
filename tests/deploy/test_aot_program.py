"""The AOT arena layout (tvmcompress/aot/program.py) and the C tables built from it, without compiling a model."""

from __future__ import annotations

import numpy as np
import pytest

from tvmcompress.aot.export_aot import weights_blob
from tvmcompress.aot.program import ALIGN, AotProgram, KernelCall, Tensor, _lay_out_arena, dlpack_dtype
from tvmcompress.errors import TvmcompressError


def _program(sizes: list[int]) -> AotProgram:
    """One arena tensor at offset 8 of each storage (before layout `where` is (storage, offset))."""
    program = AotProgram(storage_bytes=list(sizes))
    program.tensors = [Tensor("arena", (i, 8), (2,), "float32") for i in range(len(sizes))]
    program.tensors.append(Tensor("input", 0, (2,), "float32"))
    return program


def test_aligned_storages_then_workspace_then_the_rest_so_the_arena_is_the_plan():
    program = _program([40, 4096, 1024])
    _lay_out_arena(program, 2560)
    starts = [t.where - 8 for t in program.tensors[:3]]
    assert starts == [4096 + 1024 + 2560, 0, 4096]  # the 40-byte output storage goes last
    assert (program.workspace_offset, program.workspace_bytes) == (5120, 2560)
    assert program.arena_bytes == 40 + 4096 + 1024 + 2560  # no padding: the memory plan's peak exactly
    assert all(start % ALIGN == 0 for start in starts) and program.workspace_offset % ALIGN == 0
    assert program.tensors[3] == Tensor("input", 0, (2,), "float32")  # inputs are not in the arena


def test_unaligned_storages_are_padded_only_between_regions():
    program = _program([100, 30])
    _lay_out_arena(program, 0)
    starts = sorted(t.where - 8 for t in program.tensors[:2])
    assert starts == [0, 128]  # 100 rounded up to 64s; the last region is not padded
    assert program.arena_bytes == 128 + 30


def test_peak_call_names_the_kernel_with_most_arena_bytes():
    program = _program([4096, 4096])
    _lay_out_arena(program, 0)
    program.calls = [KernelCall("small", (2, 0)), KernelCall("big", (0, 1))]
    assert program.peak_call() == ("big", 16)


def test_weights_blob_aligns_each_weight_to_16_bytes_little_endian():
    program = AotProgram(consts=[np.arange(3, dtype=">i4"), np.ones(5, np.int8)])
    blob, offsets = weights_blob(program)
    assert offsets == [0, 16] and len(blob) == 32
    assert np.frombuffer(blob[:12], "<i4").tolist() == [0, 1, 2] and blob[16:21] == b"\x01" * 5


@pytest.mark.parametrize("dtype, expected", [("float32", (2, 32)), ("int8", (0, 8)), ("uint8", (1, 8)),
                                             ("bool", (6, 8)), ("float16", (2, 16)), ("bfloat16", (4, 16))])
def test_dlpack_dtype_codes(dtype, expected):
    assert dlpack_dtype(dtype) == expected


def test_vector_dtypes_are_refused():
    with pytest.raises(TvmcompressError, match="export without --aot"):
        dlpack_dtype("float32x4")
