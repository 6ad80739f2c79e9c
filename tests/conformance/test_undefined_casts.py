"""Float -> int4 / uint4 / int2 / uint2 casts out of range are undefined in ONNX; onnx's node-test reference there
follows the installed ml_dtypes (the low bits before 0.7, 0 since). The runner compares only the defined
elements, so a conformance result does not depend on the ml_dtypes version (no compile: these check the checker).
"""

from __future__ import annotations

import numpy as np
import pytest
from conformance_cases import SUB_BYTE_INTEGER_RANGES, defined_elements, load_cases
from conformance_worker import compare_outputs
from onnx import TensorProto

CASES = {c.name: c for c in load_cases()}
BITS = {"int4": (4, True), "uint4": (4, False), "int2": (2, True), "uint2": (2, False)}
FLOAT_TO_SUB_BYTE = sorted(
    name for name in CASES
    if name.startswith(("test_cast_FLOAT", "test_castlike_FLOAT")) and "FLOAT8" not in name.split("_to_")[0]
    and name.split("_to_")[1].removesuffix("_expanded") in ("INT4", "UINT4", "INT2", "UINT2")
)


def _compare(got, case):
    return compare_outputs(got, case.outputs, ["output"], case.rtol, case.atol, defined_elements(case))


def _low_bits(values: np.ndarray, dtype) -> np.ndarray:
    """What ml_dtypes < 0.7 gave out of range: truncate, keep the low bits (two's complement)."""
    bits, signed = BITS[np.dtype(dtype).name]
    wrapped = np.trunc(values.astype(np.float64)).astype(np.int64) & ((1 << bits) - 1)
    if signed:
        wrapped = np.where(wrapped >= 1 << (bits - 1), wrapped - (1 << bits), wrapped)
    return wrapped.astype(dtype)


def test_all_24_float_to_sub_byte_integer_cases_are_found():
    assert len(FLOAT_TO_SUB_BYTE) == 24, FLOAT_TO_SUB_BYTE


@pytest.mark.parametrize("name", FLOAT_TO_SUB_BYTE)
def test_only_out_of_range_elements_are_left_out_and_either_ml_dtypes_answer_passes(name):
    case = CASES[name]
    (mask,) = defined_elements(case)
    source, ref = case.inputs[0].astype(np.float64), case.outputs[0]
    elem_type = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int2": TensorProto.INT2,
                 "uint2": TensorProto.UINT2}[ref.dtype.name]
    low, high = SUB_BYTE_INTEGER_RANGES[elem_type]
    np.testing.assert_array_equal(mask, (source >= low) & (source <= high))
    assert 0 < np.count_nonzero(~mask) < mask.size  # the test data has both kinds
    old = np.where(mask, ref, _low_bits(source, ref.dtype)).astype(ref.dtype)  # ml_dtypes < 0.7
    new = np.where(mask, ref, np.zeros_like(ref)).astype(ref.dtype)  # ml_dtypes >= 0.7
    assert _compare([old], case) is None and _compare([new], case) is None
    # A defined element that is wrong still fails.
    wrong = ref.copy()
    index = np.flatnonzero(mask)[0]
    wrong.reshape(-1)[index] = ref.dtype.type(1 if int(ref.reshape(-1)[index]) == 0 else 0)
    assert "1/" in _compare([wrong], case)


# From int4 (its values are in range), to a wide type, another op, QuantizeLinear (it saturates: defined), and a
# graph output made by a node without inputs.
@pytest.mark.parametrize("name", ["test_cast_INT4_to_FLOAT", "test_cast_FLOAT_to_DOUBLE", "test_relu",
                                  "test_quantizelinear_int4", "test_constant"])
def test_other_cases_compare_every_element(name):
    assert defined_elements(CASES[name]) == [None] * len(CASES[name].outputs)
