"""Fixtures of the numerics tier: the digits data, the models under test and their fp32 accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from digits_models import BATCH, EXAMPLES, accuracy, digits_split, train_mlp, with_batch

from tvmcompress.frontend import load_model


@pytest.fixture(scope="session")
def digits_data():
    """(x_train, x_test, y_test); x_test is examples/digits_test.npz."""
    x_train, x_test, _, y_test = digits_split()
    np.testing.assert_array_equal(x_test, np.load(EXAMPLES / "digits_test.npz")["input"])
    return x_train, x_test, y_test


@pytest.fixture(scope="session")
def digits_models(digits_data):
    x_train, _, _ = digits_data
    _, _, y_train, _ = digits_split()
    return {
        "digits_cnn": with_batch(load_model(EXAMPLES / "digits_cnn.onnx"), BATCH),
        "digits_mlp": with_batch(train_mlp(x_train, y_train), BATCH),
    }


@pytest.fixture(scope="session")
def fp32_accuracy(digits_models, digits_data):
    _, x_test, y_test = digits_data
    return {name: accuracy(mod, x_test, y_test) for name, mod in digits_models.items()}
