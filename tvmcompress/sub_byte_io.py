"""Sub-byte ONNX element types (INT4, UINT4, INT2, UINT2, FLOAT4E2M1; and FLOAT8E8M0) at a library's boundary.

TVM 0.27 cannot hold sub-byte tensors, so the library carries each such value in a byte-or-wider "library
dtype" that holds it exactly (int4 -> int8, uint4 -> uint8, float4_e2m1fn -> float32; see
tvmcompress/onnx_ops/sub_byte.py for the conversions inside the graph). The manifest records both dtypes of an
input or output (`dtype`: the model's, `library_dtype`: model.so's); `Artifact.run` takes and returns the
model's dtype (ml_dtypes arrays, as `onnx.numpy_helper.to_array` gives), converting at the call.

`.npz` files cannot hold ml_dtypes' sub-byte types (numpy saves them as raw bytes), so inputs may also come in
the library dtype, with values the sub-byte type holds; `storable` gives outputs in the library dtype for files.
No TVM import here: the CLI reads manifests without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import TvmcompressError

if TYPE_CHECKING:
    import numpy as np

LIBRARY_DTYPES: dict[str, str] = {
    "int4": "int8",
    "uint4": "uint8",
    "int2": "int8",
    "uint2": "uint8",
    "float4_e2m1fn": "float32",
    "float8_e8m0fnu": "float32",  # not sub-byte, but TVM 0.27 cannot convert it (tvmcompress/onnx_ops/sub_byte.py)
}


def library_dtype(dtype: str) -> str:
    """The dtype model.so takes or returns for a model input or output of `dtype`."""
    return LIBRARY_DTYPES.get(dtype, dtype)


def manifest_entry(dtype: str) -> dict[str, str]:
    """{"library_dtype": ...} for a sub-byte dtype (to merge into a manifest's input/output entry), else {}."""
    return {"library_dtype": LIBRARY_DTYPES[dtype]} if dtype in LIBRARY_DTYPES else {}


def _ml_dtype(dtype: str):
    import ml_dtypes
    import numpy as np

    return np.dtype(getattr(ml_dtypes, dtype))


def from_storable(array: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """An input given in the library dtype of a sub-byte `dtype` (as .npz files must), as `dtype`; any other
    array unchanged (the usual dtype check reports a mismatch)."""
    if dtype not in LIBRARY_DTYPES or str(getattr(array, "dtype", "")) != LIBRARY_DTYPES[dtype]:
        return array
    import numpy as np

    converted = array.astype(_ml_dtype(dtype))
    if not np.array_equal(converted.astype(array.dtype), array, equal_nan=False):
        raise TvmcompressError(
            f"input '{name}' is given as {array.dtype} for a {dtype} input, but holds values that {dtype} cannot "
            f"hold: give {dtype} values"
        )
    return converted


def to_library(array: np.ndarray, dtype: str) -> np.ndarray:
    """A model input of a sub-byte `dtype` as the library takes it (exact); other arrays unchanged."""
    return array.astype(LIBRARY_DTYPES[dtype]) if dtype in LIBRARY_DTYPES else array


def from_library(array: np.ndarray, dtype: str) -> np.ndarray:
    """A library output as the model's `dtype` (exact: the library computes values of that type)."""
    return array.astype(_ml_dtype(dtype)) if dtype in LIBRARY_DTYPES else array


def storable(array: np.ndarray) -> np.ndarray:
    """`array` in a dtype an .npz file holds: sub-byte arrays in their library dtype, others unchanged."""
    name = str(array.dtype)
    return array.astype(LIBRARY_DTYPES[name]) if name in LIBRARY_DTYPES else array
