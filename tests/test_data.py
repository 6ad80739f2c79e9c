"""The .npz contract (tvmcompress.data): labels are one per stacked row, so batched classifiers can be evaluated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tvmcompress.data import validate_inputs
from tvmcompress.errors import TvmcompressError


@dataclass
class Spec:
    name: str
    shape: tuple
    dtype: str = "float32"


def test_labels_are_one_per_row_of_a_batched_model():
    spec = [Spec("x", (4, 8))]  # a model called on batches of 4
    data = {"x": np.zeros((12, 8), np.float32), "label": np.arange(12)}
    assert validate_inputs(data, spec, source="eval.npz") == 3  # 3 calls, 12 labelled rows


def test_labels_per_call_instead_of_per_row_are_refused_with_the_shape_to_use():
    spec = [Spec("x", (4, 8))]
    data = {"x": np.zeros((12, 8), np.float32), "label": np.arange(3)}
    with pytest.raises(TvmcompressError, match=r"'label' has shape \[3\] for 12 input rows: give one label per row, shape \[12\]"):
        validate_inputs(data, spec, source="eval.npz")
