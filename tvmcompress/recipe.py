"""Recipes: a compile's target and options as TOML, so that a build can be repeated exactly.

    version = 1
    target = "host"

    [options]
    calibration = "/data/calib.npz"
    cluster_bits = 4

    [options.quantize]
    mode = "int8"

`tvmcompress compile MODEL --recipe r.toml` compiles with it (flags given as well override it), every manifest
embeds the recipe of its build (`recipe`), and `tvmcompress recipe OUT` prints it. A recipe holds every option,
defaults included, so that a later default change does not silently change what it builds. TOML has no null: an
option that is None is left out, which from_dict reads as its default (None for every such option).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from .config import CompileOptions
from .errors import TvmcompressError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, before it joined the standard library
    import tomli as tomllib

__all__ = ["VERSION", "recipe_of", "dumps", "loads", "read"]

VERSION = 1


def recipe_of(target: str, options: CompileOptions) -> dict[str, Any] | None:
    """The recipe (plain values) of compiling for `target` (a preset name or TVM target JSON) with `options`;
    None when data was given in Python (data.Samples), which a recipe cannot hold."""
    if not all(isinstance(d, (str, type(None))) for d in (options.calibration, options.eval_data)):
        return None
    return {"version": VERSION, "target": target, "options": options.to_dict()}


def loads(text: str, source: str = "recipe") -> tuple[str, CompileOptions]:
    """(target, options) of a recipe's TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TvmcompressError(f"{source} is not valid TOML ({err}): write it as `tvmcompress recipe OUT` does") from None
    return from_dict(data, source)


def from_dict(data: Mapping[str, Any], source: str = "recipe") -> tuple[str, CompileOptions]:
    unknown = sorted(set(data) - {"version", "target", "options"})
    if unknown:
        raise TvmcompressError(f"{source}: unknown key(s) {', '.join(unknown)}: a recipe has version, target and "
                               "[options]")
    if data.get("version") != VERSION:
        raise TvmcompressError(f"{source}: recipe version {data.get('version')!r} is not {VERSION}, the version this "
                               "tvmcompress reads")
    target = data.get("target", "host")
    if not isinstance(target, str):
        raise TvmcompressError(f"{source}: target must be a preset name or TVM target JSON string")
    try:
        return target, CompileOptions.from_dict(data.get("options", {}))
    except TvmcompressError as err:
        raise type(err)(f"{source}: {err}") from None


def read(path: str | os.PathLike) -> tuple[str, CompileOptions]:
    """(target, options) of the recipe file at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise TvmcompressError(f"cannot read recipe {os.fspath(path)}: {err.strerror}") from None
    return loads(text, f"recipe {os.fspath(path)}")


def dumps(recipe: Mapping[str, Any]) -> str:
    """TOML text of a recipe (or any table of strings, numbers, booleans, lists and tables)."""
    lines: list[str] = []
    _table(recipe, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if v is not None and not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (plain or not tables):
        lines += ["", "[" + ".".join(_key(p) for p in path) + "]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in plain.items()]
    for key, sub in tables.items():
        _table(sub, [*path, key], lines)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # the shortest text that reads back as the same double
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise TvmcompressError("a recipe list cannot hold null values")
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # inside a list (pruning overrides): an inline table
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TvmcompressError(f"cannot write {type(value).__name__} {value!r} into a recipe")
