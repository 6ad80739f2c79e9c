"""The tolerance overrides: their float64 computations are the tests' graphs, and an override never passes an
output that is farther from float64 than the reference (no compile: these check the checker)."""

from __future__ import annotations

import numpy as np
import pytest
from conformance_cases import load_cases
from conformance_worker import compare_outputs
from tolerance_overrides import OVERRIDES, check_override

CASES = {c.name: c for c in load_cases() if c.name in OVERRIDES}


def _compare(got, expected, rtol, atol):
    return compare_outputs(got, expected, [f"out{i}" for i in range(len(got))], rtol, atol)


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_float64_computation_is_the_tests_graph(name):
    # The reference (low precision) must agree with our float64 computation to within the override's tolerance:
    # a float64 function of some other graph would not.
    case = CASES[name]
    override = OVERRIDES[name]
    exact = override.float64_outputs(case.inputs)
    for ref, e in zip(case.outputs, exact):
        assert ref.shape == e.shape
        np.testing.assert_allclose(ref.astype(np.float64), e, rtol=override.rtol, atol=override.atol)


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_override_applies_to_the_float64_answer_and_not_to_a_worse_one(name):
    case = CASES[name]
    exact = OVERRIDES[name].float64_outputs(case.inputs)
    best = [e.astype(r.dtype) for e, r in zip(exact, case.outputs)]
    result = check_override(name, best, case.outputs, case.inputs, _compare)
    assert result["applied"], result
    assert result["ours_vs_float64"] <= result["reference_vs_float64"]
    # Within the override's tolerance of the reference, but farther from float64 than the reference is: the
    # reference pushed away from the exact answer by its own error again.
    worse = [(r.astype(np.float64) + 0.9 * (r.astype(np.float64) - e)).astype(r.dtype)
             for r, e in zip(case.outputs, exact)]
    result = check_override(name, worse, case.outputs, case.inputs, _compare)
    assert not result["applied"] and "farther from float64" in result["message"], result


def test_no_override_for_other_tests():
    assert check_override("test_relu", [np.zeros(1)], [np.ones(1)], [np.zeros(1)], _compare) is None


def test_override_beyond_its_tolerance_stays_wrong():
    name = "test_dft_inverse"
    case = CASES[name]
    off = [case.outputs[0] + np.float32(1e-3)]
    result = check_override(name, off, case.outputs, case.inputs, _compare)
    assert not result["applied"] and "elements differ" in result["message"], result
