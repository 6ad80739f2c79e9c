"""weights.bin (tvmcompress/weights_file.py) and the LiftWeights pass behind `compile --separate-weights`."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress import weights_file
from tvmcompress.errors import TvmcompressError
from tvmcompress.lift_weights import LiftWeights


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((3, 5)).astype(np.float32),
        np.arange(7, dtype=np.int8),
        np.array(2.5, dtype=np.float32),  # rank 0
        rng.integers(0, 2, (2, 2, 2)).astype(bool),
    ]


def test_weights_file_round_trips_dtypes_shapes_and_values(tmp_path):
    path = tmp_path / "weights.bin"
    entries = weights_file.write(path, _arrays())
    assert [e.offset % weights_file.ALIGNMENT for e in entries] == [0, 0, 0, 0]
    codec, header = weights_file.read_header(path)
    assert codec == "raw" and header == entries
    assert [(e.dtype, e.shape, e.nbytes) for e in header] == [
        ("float32", (3, 5), 60), ("int8", (7,), 7), ("float32", (), 4), ("bool", (2, 2, 2), 8),
    ]
    for got, expected in zip(weights_file.read(path), _arrays()):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_weights_file_layout_is_the_documented_one(tmp_path):
    """The C reader (deploy_templates/weights_reader.h) hard-codes these offsets."""
    path = tmp_path / "weights.bin"
    weights_file.write(path, [np.ones((2, 3), np.float32)])
    data = path.read_bytes()
    assert data[:8] == b"TVMCWTS1"
    assert struct.unpack_from("<IIII", data, 8) == (1, 1, 64, 0)
    assert data[24:40] == b"raw".ljust(16, b"\0")
    assert data[40:56] == b"float32".ljust(16, b"\0")
    assert struct.unpack_from("<I", data, 56)[0] == 2
    assert struct.unpack_from("<8q", data, 64) == (2, 3, 0, 0, 0, 0, 0, 0)
    assert struct.unpack_from("<QQQ", data, 128) == (192, 24, 24)  # offset: 40 + 112 rounded up to 64
    assert len(data) == 192 + 24


def test_weights_file_rejects_unknown_codecs_and_damage(tmp_path):
    path = tmp_path / "weights.bin"
    with pytest.raises(TvmcompressError, match="unknown weights codec 'zstd': use one of raw"):
        weights_file.write(path, _arrays(), codec="zstd")
    weights_file.write(path, _arrays())
    data = bytearray(path.read_bytes())
    data[24:40] = b"zstd".ljust(16, b"\0")
    path.write_bytes(bytes(data))
    with pytest.raises(TvmcompressError, match="uses weights codec 'zstd', which this tvmcompress cannot decode"):
        weights_file.read(path)
    path.write_bytes(b"TVMCWTS0" + bytes(data[8:]))
    with pytest.raises(TvmcompressError, match="not a tvmcompress weights file"):
        weights_file.read(path)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(TvmcompressError, match="is truncated: recompile the model"):
        weights_file.read(path)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
        y = R.add(x, R.const(np.full((2, 3), 2.0, np.float32)))
        z = R.multiply(y, R.const(3.0, "float32"))  # a scalar: stays embedded
        return z


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((2, 3), "float32"), weight0: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
        y = R.add(x, weight0)
        z = R.multiply(y, R.const(3.0, "float32"))
        return z


def test_lift_weights_turns_tensor_constants_into_parameters():
    lift = LiftWeights()
    after = lift(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    assert len(lift.lifted) == 1
    np.testing.assert_array_equal(lift.lifted[0], np.full((2, 3), 2.0, np.float32))
    # Numerically the same function once the lifted weight is passed back in.
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    before = relax.VirtualMachine(tvm.compile(Before, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x))
    lifted = relax.VirtualMachine(tvm.compile(after, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(lift.lifted[0])
    )
    np.testing.assert_array_equal(before.numpy(), lifted.numpy())


def test_lift_weights_leaves_a_module_without_tensor_constants_alone():
    @I.ir_module
    class Scalars:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            y = R.add(x, R.const(1.0, "float32"))
            return y

    lift = LiftWeights()
    tvm.ir.assert_structural_equal(lift(Scalars), Scalars)
    assert lift.lifted == []


def test_lift_weights_gives_a_constant_used_twice_one_parameter():
    weight = relax.const(np.ones((4,), np.float32))  # one object, used by two calls

    @I.ir_module
    class Twice:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            y = R.add(x, weight)
            z = R.multiply(y, weight)
            return z

    @I.ir_module
    class TwiceExpected:
        @R.function
        def main(x: R.Tensor((4,), "float32"), weight0: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            y = R.add(x, weight0)
            z = R.multiply(y, weight0)
            return z

    lift = LiftWeights()
    tvm.ir.assert_structural_equal(lift(Twice), TwiceExpected)
    assert len(lift.lifted) == 1
