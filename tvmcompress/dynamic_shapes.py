"""Dynamic shapes: one artifact that runs every input shape within ranges chosen at compile time.

    tvmcompress compile m.onnx -o out --input-shape x=1..8,3,32..1024,32..1024
    tvmcompress compile m.onnx -o out --input-shape x=N,3,H,W --dim N=1..8 --dim H=32..1024 --dim W=32..1024

A range dim becomes a named symbolic dim (`--dim NAME=MIN..MAX`; an inline range `1..8` at axis A of input x is
named `x_A`); the same name on several inputs (or axes) means the same size. The flow:
- canonicalize writes the symbols as `dim_param`s; shape ops on them stay in the graph (TVM imports them as
  Relax shape expressions) and the static-shape check is skipped;
- the import gives each symbol one `tir.Var`, and `main` carries `tir_var_lower_bound`/`tir_var_upper_bound`, so
  Relax's StaticPlanBlockMemory plans every intermediate for the largest shape (memory_plan reads it as constants);
- verification runs the build against ONNX Runtime at the smallest, a middle and the largest shape;
- the manifest's `dynamic_dims` records the ranges, each input/output its `dims` (symbols as strings) and `shape`
  the largest shape; `Artifact.run` checks a call's shape against the ranges (`check_call`);
- the deploy bundle's model.h carries the ranges and `NAME_run_shaped` (`c_header_lines`, model_api.cc.in).
Kernels: the packed conv2d/dense computes take a symbolic batch, height or width (schedules/cpu_rules: a register
tile for a representative width, the tail under a predicate; Winograd with a symbolic batch, not with a symbolic
height or width);
an LSTM over a symbolic sequence length is one loop kernel (onnx_ops/recurrent_loop.py).

Not supported yet (a clear error): compression (quantize, prune, cluster, sparse), tuning, --separate-weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .dim_ranges import check_compile_options, freeze_ranges  # noqa: F401 - re-exported
from .errors import TvmcompressError

_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Dims = tuple  # of int (static) and str (a symbol named in the ranges)


@dataclass(frozen=True)
class DimRange:
    """A symbolic dim and the sizes it may take at run time, both ends included."""

    name: str
    min: int
    max: int

    def to_json(self) -> dict[str, int]:
        return {"min": self.min, "max": self.max}


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """`MIN..MAX` with 1 <= MIN <= MAX."""
    match = _RANGE.match(text.strip())
    if match is None:
        raise TvmcompressError(f"bad {flag}: range '{text}' is not MIN..MAX: give positive integers such as 1..8")
    low, high = int(match.group(1)), int(match.group(2))
    if low < 1:
        raise TvmcompressError(f"bad {flag}: range {text} starts below 1: give MIN..MAX with MIN >= 1")
    if low > high:
        raise TvmcompressError(f"bad {flag}: range {text} has min {low} above max {high}: give MIN..MAX with MIN <= MAX")
    return low, high


def parse_shape_flags(shapes: Sequence[str], dims: Sequence[str]) -> tuple[dict[str, Dims], dict[str, tuple[int, int]]]:
    """The CLI's `--input-shape NAME=D1,D2,...` (each D an integer, MIN..MAX or a symbol) and `--dim SYM=MIN..MAX`,
    as (input shapes, symbol ranges) for CompileOptions.create."""
    ranges: dict[str, tuple[int, int]] = {}
    for text in dims:
        name, sep, value = text.partition("=")
        flag = f"--dim {text}"
        if not sep or not _NAME.match(name):
            raise TvmcompressError(f"bad {flag}: use NAME=MIN..MAX such as N=1..8 (NAME a letter, then letters, "
                                   "digits or _)")
        if name in ranges:
            raise TvmcompressError(f"bad {flag}: {name} is given twice: give each --dim once")
        ranges[name] = parse_range(value, flag)
    input_shapes: dict[str, Dims] = {}
    for text in shapes:
        name, sep, spec = text.rpartition("=")
        flag = f"--input-shape {text}"
        if not sep or not name or not spec:
            raise TvmcompressError(f"bad {flag}: use NAME=D1,D2,... such as input=1,3,224,224 or x=1..8,3,224,224")
        parsed: list[int | str] = []
        for axis, token in enumerate(t.strip() for t in spec.split(",")):
            if token.lstrip("-").isdigit():
                parsed.append(int(token))
            elif ".." in token:
                symbol = f"{_identifier(name)}_{axis}"
                ranges[symbol] = parse_range(token, flag)
                parsed.append(symbol)
            elif _NAME.match(token):
                parsed.append(token)
            else:
                raise TvmcompressError(f"bad {flag}: dim '{token}' is not an integer, MIN..MAX or a --dim name")
        input_shapes[name] = tuple(parsed)
    return input_shapes, ranges


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if _NAME.match(ident) else f"in_{ident}"


def check_against_model(model, input_shapes: Mapping[str, Dims], ranges: Mapping[str, tuple[int, int]]) -> None:
    """A symbolic dim may only replace a dim the model leaves dynamic, and a size the model fixes must be kept."""
    from .frontend import _dims  # the one reader of ONNX dims in their three dynamic forms

    for info in model.graph.input:
        given = input_shapes.get(info.name)
        dims = _dims(info)
        if given is None or dims is None or len(dims) != len(given):
            continue  # the frontend reports unknown names and rank mismatches in its own words
        for axis, (old, new) in enumerate(zip(dims, given)):
            if isinstance(new, str) and isinstance(old, int) and old > 0:
                low, high = ranges[new]
                raise TvmcompressError(
                    f"--input-shape {info.name}: dim {axis} is given the range {new}={low}..{high} but the model "
                    f"fixes it at {old}: give {old} there"
                )


def symbol_vars(ranges: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """One int64 tir.Var per symbol, shared by every input that names it."""
    from tvm import tirx

    return {name: tirx.Var(name, "int64") for name in ranges}


def relax_shape_dict(inputs, input_shapes: Mapping[str, Dims], variables: Mapping[str, Any]) -> dict[str, list]:
    """The importer's shape_dict: static dims as ints, symbols as their tir.Var."""
    shape_dict = {}
    for spec in inputs:
        given = input_shapes.get(spec.name, spec.shape)
        shape_dict[spec.name] = [variables[d] if isinstance(d, str) else int(d) for d in given]
    return shape_dict


def annotate_bounds(mod, ranges: Mapping[str, tuple[int, int]]):
    """`main` with the symbols' bounds: StaticPlanBlockMemory sizes its storage for the upper bounds, and
    shape arithmetic may use the lower ones."""
    main = mod["main"]
    main = main.with_attr("tir_var_upper_bound", {name: high for name, (_, high) in ranges.items()})
    main = main.with_attr("tir_var_lower_bound", {name: low for name, (low, _) in ranges.items()})
    mod["main"] = main
    return mod


def output_dims(mod, ranges: Mapping[str, tuple[int, int]], variables: Mapping[str, Any]
                ) -> list[tuple[list, list[int]]]:
    """Each output of `main` as (dims, largest shape): a dim is an int or its symbolic expression as TVM prints it
    (e.g. 'W // 4'); the largest shape puts every symbol at its max (shapes grow with their symbols)."""
    from tvm import relax, tirx
    from tvm.sym.analyzer import Analyzer

    ret = mod["main"].ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    analyzer = Analyzer()
    for name, var in variables.items():
        analyzer.bind(var, tirx.const(ranges[name][1], "int64"))
    result = []
    for field in fields:
        shape = getattr(field, "shape", None)
        values = list(shape.values) if isinstance(shape, relax.ShapeExpr) else []
        dims, largest = [], []
        for value in values:
            if isinstance(value, tirx.IntImm):
                dims.append(int(value.value))
                largest.append(int(value.value))
                continue
            # TVM prints 'W // T.int64(4)': the manifest and model.h say 'W // 4'.
            dims.append(re.sub(r"T\.int64\((-?\d+)\)", r"\1", str(value)))
            largest.append(int(analyzer.simplify(value)))
        result.append((dims, largest))
    return result


def shape_points(ranges: Mapping[str, tuple[int, int]]) -> list[dict[str, int]]:
    """The symbol sizes verification runs: all at min, all in the middle, all at max (deduplicated)."""
    points = []
    for pick in (lambda lo, hi: lo, lambda lo, hi: (lo + hi) // 2, lambda lo, hi: hi):
        point = {name: pick(lo, hi) for name, (lo, hi) in ranges.items()}
        if point not in points:
            points.append(point)
    return points


def concrete_shape(dims: Sequence, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """An input's dims (ints and symbols) at concrete symbol sizes."""
    return tuple(sizes[d] if isinstance(d, str) else int(d) for d in dims)


# ------------------------------------------------------------------------------------------------- run time


def check_call(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]],
               ranges: Mapping[str, Mapping[str, int]], source: str) -> dict[str, int]:
    """Check one call of a dynamic artifact (manifest `inputs` entries with `dims`, manifest `dynamic_dims`):
    the model's inputs, each of the right rank and dtype, every static dim as compiled, every symbol within its
    range and the same wherever it appears. Returns the symbol sizes."""
    expected = {entry["name"]: entry for entry in inputs}
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
        raise TvmcompressError(f"{source}: {what}; the model's inputs are {', '.join(expected)}")
    sizes: dict[str, int] = {}
    for name, entry in expected.items():
        array, dims = arrays[name], entry["dims"]
        if array.dtype != np.dtype(entry["dtype"]):
            raise TvmcompressError(f"{source}: input '{name}' has dtype {array.dtype}, the model expects "
                                   f"{entry['dtype']}")
        layout = "[" + ", ".join(str(d) for d in dims) + "]"
        if array.ndim != len(dims):
            raise TvmcompressError(f"{source}: input '{name}' has shape {list(array.shape)}, the model expects "
                                   f"{layout}")
        for axis, (size, dim) in enumerate(zip(array.shape, dims)):
            if isinstance(dim, int):
                if size != dim:
                    raise TvmcompressError(f"{source}: input '{name}' has shape {list(array.shape)}, the model "
                                           f"expects {layout} (dim {axis} fixed at {dim})")
                continue
            low, high = ranges[dim]["min"], ranges[dim]["max"]
            if not low <= size <= high:
                raise TvmcompressError(
                    f"{source}: input '{name}' has shape {list(array.shape)}: dim {axis} ({dim}) is {size}, outside "
                    f"the compiled range {dim}={low}..{high}; give a size in the range or recompile with a wider one"
                )
            if sizes.setdefault(dim, size) != size:
                raise TvmcompressError(f"{source}: input '{name}' has {dim}={size} at dim {axis} but another input "
                                       f"has {dim}={sizes[dim]}: the same symbol must have the same size")
    return sizes


# ------------------------------------------------------------------------------------------------ the build


class DynamicBuild:
    """What one compile with dynamic dims needs besides the static flow: the symbols' tir.Vars, the bounds on
    `main`, the manifest entries and the verification at several shapes."""

    def __init__(self, options):
        self.input_shapes: dict[str, Dims] = dict(options.input_shapes)
        self.ranges: dict[str, tuple[int, int]] = dict(options.dims)
        self.variables = symbol_vars(self.ranges)

    def check_model(self, model) -> None:
        check_against_model(model, self.input_shapes, self.ranges)

    def annotate(self, mod):
        return annotate_bounds(mod, self.ranges)

    def manifest_dims(self) -> dict[str, dict[str, int]]:
        return {name: DimRange(name, low, high).to_json() for name, (low, high) in sorted(self.ranges.items())}

    def input_entries(self, specs, entry) -> list[dict[str, Any]]:
        """`entry(spec)` is the static manifest entry; `shape` becomes the largest shape, `dims` the symbols."""
        largest = {name: high for name, (_, high) in self.ranges.items()}
        entries = []
        for spec in specs:
            dims = tuple(self.input_shapes.get(spec.name, spec.shape))
            entries.append({**entry(spec), "shape": list(concrete_shape(dims, largest)), "dims": list(dims)})
        return entries

    def output_entries(self, specs, entry, mod) -> list[dict[str, Any]]:
        shapes = output_dims(mod, self.ranges, self.variables)
        if len(shapes) != len(specs):
            raise RuntimeError(f"main returns {len(shapes)} outputs, the model has {len(specs)}")
        return [{**entry(spec), "shape": largest, "dims": dims} for spec, (dims, largest) in zip(specs, shapes)]

    def verify(self, artifact, source, canonical, options) -> dict[str, Any]:
        """The build against ONNX Runtime on the source model at the smallest, a middle and the largest shape,
        with the float tolerance of verify.py; a mismatch raises TvmcompressError (nothing is written)."""
        from .frontend import TensorSpec, model_io
        from .verify import (
            _mode,
            compare_output,
            float_mismatch,
            generate_inputs,
            reference_outputs,
            tolerance_for,
            where_it_runs,
        )

        target = artifact.target
        if not options.verify:
            return {"mode": "none", "runner": target["runner"], "reason": "--no-verify"}
        reason = where_it_runs(target)
        if reason is not None:
            return {"mode": "skipped", "runner": target["runner"], "reason": reason}
        specs, _ = model_io(canonical)
        names = [spec.name for spec in artifact.outputs]
        rtol, atol = tolerance_for("float32")
        shapes = []
        for sizes in shape_points(self.ranges):
            concrete = [TensorSpec(s.name, concrete_shape(self.input_shapes.get(s.name, s.shape), sizes), s.dtype)
                        for s in specs]
            calls = generate_inputs(canonical, concrete, count=1)
            at = ", ".join(f"{k}={v}" for k, v in sizes.items())
            try:
                references = reference_outputs(source, calls, dict(options.const_inputs), names)
            except Exception as err:  # noqa: BLE001 - ORT raises its own types; a shape the model cannot take
                raise TvmcompressError(
                    f"ONNX Runtime cannot run the model at {at} ({str(err).splitlines()[0][:200]}): the model does "
                    "not take every shape in the ranges; narrow them"
                ) from err
            try:
                ours = [artifact.run(call) for call in calls]
            except TvmcompressError:
                raise
            except Exception as err:  # noqa: BLE001 - the VM's shape checks raise TVM errors
                raise TvmcompressError(
                    f"the build fails at {at} ({type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}), "
                    "where ONNX Runtime runs: build with fixed --input-shape values and report the bug"
                ) from err
            checks = []
            for spec in artifact.outputs:
                reference = np.stack([np.asarray(r[spec.name]) for r in references])
                check = compare_output(spec.name, reference, np.stack([np.asarray(o[spec.name]) for o in ours]))
                why = float_mismatch(check, spec.dtype)
                if why is not None:
                    raise TvmcompressError(
                        f"verification failed at {at}: {why}; the "
                        "build is wrong, nothing was written: build with fixed --input-shape values and report the bug"
                    )
                checks.append(check.to_json())
            shapes.append({"dims": dict(sizes), "outputs": checks})
        return {"mode": _mode(target["runner"]), "runner": target["runner"], "samples": len(shapes), "inputs": "generated",
                "tolerance": {"rtol": rtol, "atol": atol, "rule": "max|ours - ort| <= atol + rtol * max|ort|"},
                "shapes": shapes}


# ------------------------------------------------------------------------------------------------- C API


def c_header_lines(name: str, manifest: Mapping[str, Any]) -> list[str]:
    """model.h's dynamic-shape section: the symbols and their ranges, which symbol each input dim is, and
    NAME_run_shaped (model_api.cc.in implements it under `#ifdef NAME_NUM_DIMS`). Empty for a static model."""
    ranges = manifest.get("dynamic_dims") or {}
    if not ranges:
        return []
    names = sorted(ranges)
    upper = name.upper()
    lines = [
        "",
        "/* Dynamic shapes: one symbol per dynamic dim, each with the sizes it may take (both ends included). The",
        f" * shapes and byte sizes above are the largest ones: buffers of {name}_input_bytes[i] / {name}_output_bytes[i]",
        f" * bytes fit every shape in the ranges. {name}_input_dim_symbols[i][d] is the symbol of input i's dim d",
        " * (an index into the arrays below), or -1 for a fixed dim. */",
        f"#define {upper}_NUM_DIMS {len(names)}",
        f"static const char* const {name}_dim_names[{len(names)}] = {{{', '.join(_c_string(n) for n in names)}}};",
        f"static const int64_t {name}_dim_min[{len(names)}] = {{{', '.join(str(ranges[n]['min']) for n in names)}}};",
        f"static const int64_t {name}_dim_max[{len(names)}] = {{{', '.join(str(ranges[n]['max']) for n in names)}}};",
    ]
    inputs = manifest["inputs"]
    for index, entry in enumerate(inputs):
        symbols = [str(names.index(d)) if isinstance(d, str) else "-1" for d in entry["dims"]] or ["-1"]
        lines.append(f"static const int {name}_input{index}_dim_symbols[{len(symbols)}] = {{{', '.join(symbols)}}};")
    tables = ", ".join(f"{name}_input{index}_dim_symbols" for index in range(len(inputs)))
    lines += [
        f"static const int* const {name}_input_dim_symbols[{len(inputs)}] = {{{tables}}};",
        "",
        f"/* One inference at the shapes in input_shapes[i] ({name}_input_ndims[i] sizes each, within the ranges;",
        f" * a size outside them is {upper}_ERR_ARGUMENT). Each output's shape is written to output_shapes[i]",
        f" * ({name}_output_ndims[i] sizes); its data, dense and row-major, to outputs[i]. */",
        f"struct {name}_model;",
        f"int {name}_run_shaped(struct {name}_model* model, const int64_t* const* input_shapes, "
        "const void* const* inputs,",
        f"{' ' * (len(name) + 15)}void* const* outputs, int64_t* const* output_shapes);",
    ]
    return lines


def _c_string(text: str) -> str:
    import json

    return json.dumps(text)
