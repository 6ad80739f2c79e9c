"""Typed, frozen options for one compile. Validated when constructed; serialized into the manifest."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import TvmcompressError
from .passes.quantize_config import QuantizeConfig


def _freeze_shapes(shapes: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    frozen = []
    for name, dims in sorted((shapes or {}).items()):
        dims = tuple(int(d) for d in dims)
        if any(d < 1 for d in dims):
            raise TvmcompressError(f"input shape for '{name}' has a dimension below 1: {list(dims)}")
        frozen.append((name, dims))
    return tuple(frozen)


def _freeze_consts(consts: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    frozen = []
    for name, value in sorted((consts or {}).items()):
        frozen.append((name, tuple(value) if isinstance(value, (list, tuple)) else value))
    return tuple(frozen)


# MetaSchedule's LocalBuilder gives up on a candidate after 30 s by default, which a busy 2-core machine reaches
# while LLVM compiles a large fused conv; such candidates would be lost as failures.
DEFAULT_BUILDER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RpcTarget:
    """A device registered with TVM's RPC tracker (`python -m tvm.exec.rpc_tracker` / `rpc_server`)."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_s: float = 120.0

    @classmethod
    def parse(cls, address: str, key: str) -> "RpcTarget":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TvmcompressError(f"bad --rpc '{address}': use HOST:PORT of the RPC tracker, e.g. 127.0.0.1:9190")
        if not key:
            raise TvmcompressError("--rpc needs --rpc-key: the key the device's rpc_server registered with")
        return cls(host, int(port), key)


@dataclass(frozen=True)
class TuneConfig:
    trials: int | None = None  # total measured candidates across tasks
    minutes: float | None = None  # wall-clock budget; tuning stops at the first round boundary past it
    database_dir: str | None = None  # shared database (--tuning-db); None: only this build's tuning/ dir
    rpc: RpcTarget | None = None
    builder_timeout_s: float = DEFAULT_BUILDER_TIMEOUT_S
    trials_per_round: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.trials is None and self.minutes is None and self.database_dir is None:
            raise TvmcompressError("tuning needs --tune-trials, --tune-minutes or --tuning-db")
        if self.trials is not None and self.trials < 1:
            raise TvmcompressError(f"--tune-trials must be at least 1, got {self.trials}")
        if self.minutes is not None and self.minutes <= 0:
            raise TvmcompressError(f"--tune-minutes must be positive, got {self.minutes}")

    @property
    def measures(self) -> bool:
        return bool(self.trials) or bool(self.minutes)


@dataclass(frozen=True)
class CompileOptions:
    """What `tvmcompress compile` does besides choosing the model and target.

    input_shapes fixes dynamic input dims (`--input-shape x=1,3,224,224`); const_inputs specializes inputs to
    constants (`--const-input scale=0.5`); cores overrides the target's core count (parallel schedules use it).
    """

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())
    const_inputs: tuple[tuple[str, Any], ...] = field(default=())
    cores: int | None = None
    tune: TuneConfig | None = None  # None: default schedules only
    quantize: QuantizeConfig | None = None  # None: keep the model's float32
    calibration: str | None = None  # .npz of calibration inputs (static int8)

    @classmethod
    def create(
        cls,
        input_shapes: Mapping[str, Any] | None = None,
        const_inputs: Mapping[str, Any] | None = None,
        cores: int | None = None,
        tune: TuneConfig | None = None,
        quantize: QuantizeConfig | None = None,
        calibration: str | None = None,
    ) -> "CompileOptions":
        if cores is not None and cores < 1:
            raise TvmcompressError(f"cores must be at least 1, got {cores}")
        if quantize is not None and quantize.mode == "int8" and calibration is None:
            raise TvmcompressError(
                "--quantize int8 needs --calibration FILE.npz: a few hundred representative inputs to measure ranges"
            )
        if calibration is not None and (quantize is None or quantize.mode != "int8"):
            raise TvmcompressError("--calibration is used by --quantize int8 only: drop it or add --quantize int8")
        return cls(
            _freeze_shapes(input_shapes), _freeze_consts(const_inputs), cores, tune, quantize,
            os.path.abspath(calibration) if calibration else None,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shapes"] = {name: list(dims) for name, dims in self.input_shapes}
        data["const_inputs"] = {name: list(v) if isinstance(v, tuple) else v for name, v in self.const_inputs}
        return data


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=D1,D2,...` (the CLI form of --input-shape)."""
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise TvmcompressError(f"bad --input-shape '{text}': use NAME=D1,D2,... such as input=1,3,224,224") from None


def parse_const_input(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` or `NAME=V1,V2,...` (the CLI form of --const-input); numbers only."""
    name, sep, raw = text.rpartition("=")

    def number(token: str) -> int | float:
        return int(token) if token.lstrip("-").isdigit() else float(token)

    try:
        if not sep or not name:
            raise ValueError
        values = [number(t) for t in raw.split(",")]
    except ValueError:
        raise TvmcompressError(f"bad --const-input '{text}': use NAME=VALUE or NAME=V1,V2 with numbers") from None
    return name, values[0] if len(values) == 1 else tuple(values)
