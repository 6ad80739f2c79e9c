import pytest

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.quantize_config import QParams, QuantizeConfig


def test_defaults_are_valid_and_serialize():
    config = QuantizeConfig()
    assert config.to_json()["exclude"] == [] and config.needs_calibration
    assert config.to_json()["weight_bits"] == 8 and QuantizeConfig(weight_bits=7).to_json()["weight_bits"] == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "int3"},
        {"calibration_method": "kl"},
        {"percentile": 40.0},
        {"activation_dtype": "int16"},
        {"exclude": ["conv2d_0"]},  # a list would make the frozen config unhashable
        {"num_bins": 16},
        {"weight_bits": 4},
        {"weight_bits": True},
    ],
)
def test_invalid_values_fail_at_construction(kwargs):
    with pytest.raises(TvmcompressError):
        QuantizeConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(Exception):
        QuantizeConfig().mode = "fp16"


def test_qparams_from_range_asymmetric_widens_to_zero():
    qp = QParams.from_range(0.5, 2.55)  # widened to [0, 2.55]: 0 is the lowest code, so relu outputs use all 256
    assert qp.scale == pytest.approx(0.01) and qp.zero_point == -128


def test_qparams_from_range_symmetric_and_uint8():
    assert QParams.from_range(-1.0, 2.54, symmetric=True) == QParams(0.02, 0, "int8")
    assert QParams.from_range(-1.0, 2.54, "uint8", symmetric=True).zero_point == 128
    assert QParams.from_range(-1.0, 1.55, "uint8").zero_point == 100


def test_qparams_rejects_bad_values():
    with pytest.raises(ValueError):
        QParams(0.0)
    with pytest.raises(ValueError):
        QParams(0.1, 200, "int8")
