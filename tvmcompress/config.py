"""Typed, frozen options for one compile. Validated when constructed; serialized into the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import TvmcompressError


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


@dataclass(frozen=True)
class CompileOptions:
    """What `tvmcompress compile` does besides choosing the model and target.

    input_shapes fixes dynamic input dims (`--input-shape x=1,3,224,224`); const_inputs specializes inputs to
    constants (`--const-input scale=0.5`); cores overrides the target's core count (parallel schedules use it).
    """

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())
    const_inputs: tuple[tuple[str, Any], ...] = field(default=())
    cores: int | None = None

    @classmethod
    def create(
        cls,
        input_shapes: Mapping[str, Any] | None = None,
        const_inputs: Mapping[str, Any] | None = None,
        cores: int | None = None,
    ) -> "CompileOptions":
        if cores is not None and cores < 1:
            raise TvmcompressError(f"cores must be at least 1, got {cores}")
        return cls(_freeze_shapes(input_shapes), _freeze_consts(const_inputs), cores)

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
