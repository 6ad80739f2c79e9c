"""The ranges of a dynamic build's symbolic dims as CompileOptions keeps and checks them (config.py), apart from
dynamic_shapes.py, which imports the compiler, so that the options stay a leaf of the import graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import OptionError, TvmcompressError


def freeze_ranges(input_shapes: Mapping[str, Sequence], ranges: Mapping[str, Sequence[int]] | None
                  ) -> tuple[tuple[str, tuple[int, int]], ...]:
    """The ranges as CompileOptions keeps them, checked against the symbols that `input_shapes` uses: each symbol
    has a range, each range a user, and each range 1 <= min <= max."""
    frozen = []
    for name, bounds in sorted((ranges or {}).items()):
        low, high = (int(b) for b in bounds)
        if low < 1 or low > high:
            raise TvmcompressError(f"dim range {name}={low}..{high} is empty or starts below 1: give MIN..MAX with "
                                   "1 <= MIN <= MAX")
        frozen.append((name, (low, high)))
    used = {d for dims in input_shapes.values() for d in dims if isinstance(d, str)}
    missing = sorted(used - {name for name, _ in frozen})
    if missing:
        # A word where a size belongs is a symbol of a dynamic shape; without a range it is most often a typo.
        raise OptionError(f"{{input_shapes}} dim {missing[0]!r} is not a number and has no range: give a size, or "
                          f"make it dynamic with {{dims=}}{missing[0]}=MIN..MAX")
    unused = sorted({name for name, _ in frozen} - used)
    if unused:
        raise OptionError(f"{{dims=}}{unused[0]} is not used by any {{input_shapes}}: use it, as in "
                          f"{{input_shapes=}}x={unused[0]},..., or drop it")
    return tuple(frozen)


def check_compile_options(options) -> None:
    """What dynamic builds do not support yet, refused before any work."""
    unsupported = [
        (options.quantize is not None, f"--quantize {options.quantize.mode if options.quantize else ''}"),
        (options.prune is not None, "--prune"),
        (options.cluster_bits is not None, "--cluster-bits"),
        (options.tune is not None, "tuning"),
        (options.separate_weights, "--separate-weights"),
        (options.calibration is not None, "--calibration"),
    ]
    for used, flag in unsupported:
        if used:
            raise TvmcompressError(f"{flag.strip()} is not supported with dynamic dims yet: build with fixed "
                                   "--input-shape values for it, or drop it")
