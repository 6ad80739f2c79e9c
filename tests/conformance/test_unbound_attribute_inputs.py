"""onnx's node tests run without binding their attribute-like inputs (what an independent harness does): the
Slice and Expand tests, whose starts/ends/axes/steps or shape are graph inputs, are rejected at canonicalize with
a one-line TvmcompressError that names the op and the inputs and suggests --const-input, instead of failing
inside TVM's build (issue 17). No compile: canonicalize raises before it."""

from __future__ import annotations

import re

import pytest
from conformance_cases import attribute_like_inputs, load_cases

from tvmcompress import frontend
from tvmcompress.errors import TvmcompressError

CASES = [c for c in load_cases() if re.match(r"test_(slice|expand)", c.name) and attribute_like_inputs(c)]


def test_the_ten_cases_of_the_issue_are_here():
    assert len(CASES) == 10, [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_unbound_slice_and_expand_inputs_are_rejected_by_name(case):
    with pytest.raises(TvmcompressError) as excinfo:
        frontend.canonicalize(frontend.load_model(case.model()))
    message = str(excinfo.value)
    assert "\n" not in message and f"{case.op} node" in message
    for name in attribute_like_inputs(case):
        assert f"graph input {name!r}" in message and f"--const-input {name}=" in message
