"""PyTorch frontend: an `nn.Module` (with example inputs), a `torch.export.ExportedProgram` or a `.pt2` file saved
with `torch.export.save` -> what the compile flow needs in place of an ONNX model.

    program = load_program(module_or_program_or_path, example_inputs)   # TorchProgram
    mod = import_to_relax(program)                                       # tvm.IRModule, weights bound
    reference = TorchReference(program)                                  # verify.verify_build's reference

The journey mirrors frontend.py's ONNX one (load -> import), and everything after the import (compression
passes, build, verification, artifact) is shared. The import goes through TVM's
`relax.frontend.torch.from_exported_program`; this file is the only place that knows it. torch is an optional
extra (`pip install tvmcompress[torch]`), imported only when a torch model is given.

Postcondition of `import_to_relax`: `main` takes the program's user inputs in order (static shapes: dynamic dims
are refused), returns one tensor for a single output and a tuple otherwise (as the ONNX importer does), and the
parameters and buffers are bound as constants. Outputs are named `output` (one) or `output_0..n-1` (several).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import TvmcompressError
from .frontend import TensorSpec

log = logging.getLogger(__name__)

PT2_SUFFIX = ".pt2"
_INSTALL_HINT = "install the extra: pip install 'tvmcompress[torch]'"


def is_torch_model(model: Any) -> bool:
    """Whether `model` is for this frontend: a `.pt2` path, an nn.Module or an ExportedProgram. Does not import
    torch (a loaded torch is the only way to hold one of its objects)."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).lower().endswith(PT2_SUFFIX)
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


def check_options(options) -> None:
    """The compile options that only an ONNX model can take, refused for a torch one in one line."""
    onnx_only = {"input_shapes": "--input-shape", "const_inputs": "--const-input"}
    given = [f"{field} ({flag})" for field, flag in onnx_only.items() if getattr(options, field)]
    if given:
        raise TvmcompressError(f"{', '.join(given)} cannot be used with a PyTorch model: export the module with "
                               "the shapes and constants it should have (torch.export.export)")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise TvmcompressError(f"compiling a PyTorch model needs torch: {_INSTALL_HINT}") from None
    return torch


@dataclass(frozen=True)
class TorchProgram:
    """A loaded torch model: the exported program, what verification runs as the reference, and its signature."""

    program: Any  # torch.export.ExportedProgram
    reference: Callable  # the nn.Module itself when one was given, else program.module()
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_calls: tuple[dict[str, np.ndarray], ...]  # the example inputs, as model calls
    source_bytes: bytes  # the .pt2 file's bytes, or the program saved with torch.export.save
    path: str | None  # the .pt2 file, when it came from one
    name: str | None  # the file's stem (the manifest's model_name)


# --------------------------------------------------------------------------------------------------- loading


def load_program(model: Any, example_inputs: Sequence | None = None) -> TorchProgram:
    """Export an nn.Module on `example_inputs` (a tuple of tensors or arrays), take an ExportedProgram as it is,
    or load a `.pt2` file. Raises TvmcompressError for a missing torch, a newer .pt2, or an export failure."""
    torch = _import_torch()
    with warnings.catch_warnings():
        # torch.export's own deprecation notices (pytree LeafSpec, ...) are not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        return _load_program(torch, model, example_inputs)


def _load_program(torch, model: Any, example_inputs: Sequence | None) -> TorchProgram:
    path = None
    reference = None
    source_bytes = None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        source_bytes = _read_file(path)
        _check_archive_version(source_bytes, path, torch)
        try:
            program = torch.export.load(io.BytesIO(source_bytes))
        except Exception as err:  # noqa: BLE001 - torch raises anything from zipfile errors to SerializeError
            raise TvmcompressError(f"cannot load {path} as a torch.export program ({_first_line(err)}): save it "
                                   "with torch.export.save") from None
        if example_inputs is not None:
            raise TvmcompressError("example_inputs are for an nn.Module: a .pt2 program keeps its own")
    elif isinstance(model, torch.export.ExportedProgram):
        program = model
        source_bytes = None
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise TvmcompressError("compiling an nn.Module needs example_inputs (a tuple of tensors with the shapes "
                                   "to compile for), or pass a torch.export.ExportedProgram")
        args = tuple(_as_tensor(torch, x) for x in (example_inputs if isinstance(example_inputs, (tuple, list))
                                                    else (example_inputs,)))
        model = model.eval()
        try:
            program = torch.export.export(model, args)
        except Exception as err:  # noqa: BLE001 - export errors are many and long
            raise TvmcompressError(f"torch.export.export failed on the module: {_first_line(err)}; make the "
                                   "module exportable (torch.export docs) or export it yourself") from None
        reference = model
    else:
        raise TvmcompressError(f"cannot compile a {type(model).__name__}: pass an nn.Module, an ExportedProgram "
                               "or a .pt2 path")
    if source_bytes is None:
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        source_bytes = buffer.getvalue()
    inputs = _user_inputs(program)
    calls = _example_calls(program, inputs, example_inputs if reference is not None else None)
    if reference is None:
        reference = program.module()
    outputs = _outputs(program)
    name = os.path.splitext(os.path.basename(path))[0] if path else None
    return TorchProgram(program, reference, tuple(inputs), tuple(outputs), tuple(calls), source_bytes, path, name)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise TvmcompressError(f"cannot read {path}: {err.strerror}") from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def _check_archive_version(data: bytes, path: str, torch) -> None:
    """Refuse, in one line, a .pt2 that a newer torch wrote: its archive version or serialization schema is one
    this torch cannot read (torch's own error is a long traceback, or worse a silent misread)."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_VALUE

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise TvmcompressError(f"{path} is not a .pt2 archive (a zip written by torch.export.save)") from None
    names = archive.namelist()
    saved_by = None
    newer = None
    for name in names:
        if name.endswith("/archive_version"):
            version = archive.read(name).decode(errors="replace").strip()
            if not version.isdigit() or int(version) > int(ARCHIVE_VERSION_VALUE):
                newer = f"archive version {version}, this torch reads up to {ARCHIVE_VERSION_VALUE}"
        elif name.endswith(".json") and "/models/" in name:
            try:
                meta = json.loads(archive.read(name))
            except ValueError:
                continue
            saved_by = meta.get("torch_version", saved_by)
            schema = meta.get("schema_version") or {}
            major = schema.get("major")
            if isinstance(major, int) and major > SCHEMA_VERSION[0]:
                newer = (f"schema version {major}.{schema.get('minor')}, this torch reads "
                         f"{SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]}")
    if newer is not None:
        written = f"; written by torch {saved_by}" if saved_by else ""
        raise TvmcompressError(f"{path} is from a newer torch ({newer}{written}): upgrade torch or save the "
                               f"program again with the installed torch {torch.__version__}")


def _as_tensor(torch, value):
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _user_inputs(program) -> list[TensorSpec]:
    """The program's user inputs (not its parameters or buffers), in order, with static shapes."""
    import torch

    specs = []
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    for spec in program.graph_signature.input_specs:
        if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT:
            continue
        value = placeholders[spec.arg.name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise TvmcompressError(f"input '{spec.arg.name}' is not a tensor: only tensor inputs can be compiled")
        shape = []
        for dim in value.shape:
            if not isinstance(dim, int):
                raise TvmcompressError(f"input '{spec.arg.name}' has a dynamic dim ({dim}): export the program "
                                       "with static shapes (no dynamic_shapes=)")
            shape.append(dim)
        specs.append(TensorSpec(spec.arg.name, tuple(shape), _dtype_name(value.dtype)))
    return specs


def _outputs(program) -> list[TensorSpec]:
    import torch

    values = []
    nodes = {node.name: node for node in program.graph.nodes}
    for spec in program.graph_signature.output_specs:
        if spec.kind != torch.export.graph_signature.OutputKind.USER_OUTPUT:
            continue  # mutated buffers: state, not a result
        node = nodes.get(getattr(spec.arg, "name", None))
        value = node.meta.get("val") if node is not None else None
        if not isinstance(value, torch.Tensor):
            raise TvmcompressError("the program returns a non-tensor value: only tensor outputs can be compiled")
        values.append(value)
    names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    return [TensorSpec(n, tuple(int(d) for d in v.shape), _dtype_name(v.dtype)) for n, v in zip(names, values)]


def _dtype_name(dtype) -> str:
    import torch

    return str(torch.empty((), dtype=dtype).numpy().dtype) if dtype != torch.bfloat16 else "bfloat16"


def _example_calls(program, inputs: Sequence[TensorSpec], given) -> list[dict[str, np.ndarray]]:
    """The example inputs as one model call: given ones for a module, else those the program (or .pt2) kept."""
    args = given
    if args is None:
        example = getattr(program, "example_inputs", None)
        args = example[0] if example else None
    if args is None:
        return []
    args = args if isinstance(args, (tuple, list)) else (args,)
    if len(args) != len(inputs):
        return []
    return [{spec.name: np.asarray(arg.detach().numpy() if hasattr(arg, "detach") else arg)
             for spec, arg in zip(inputs, args)}]


# ------------------------------------------------------------------------------------------------- import


def _select_int(node, importer):
    """aten.select.int with the index made non-negative. TVM 0.27's converter emits take(x, -1, mode="fast"),
    which reads out of bounds (x[:, -1] of an LSTM's output came back as garbage, 1e16); torch's select counts a
    negative index from the end."""
    from tvm import relax

    x = importer.env[node.args[0]]
    dim, index = node.args[1], node.args[2]
    if index < 0:
        size = importer.shape_of(x)[dim]
        index += int(size)
    return importer.block_builder.emit(relax.op.take(x, relax.const(index, "int64"), dim))


def _squeeze(node, importer):
    """aten.squeeze with non-negative dims, and only those of size 1 (torch leaves other dims alone). TVM 0.27's
    converter keeps a negative axis, and ConvertLayout then dies in std::bad_alloc on R.squeeze(x, axis=[-2])
    (nn.TransformerEncoderLayer's attention emits one)."""
    from tvm import relax

    x = importer.env[node.args[0]]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("dims"))
    if dims is None:
        return importer.block_builder.emit(relax.op.squeeze(x))
    shape = [int(d) for d in importer.shape_of(x)]
    dims = [dims] if isinstance(dims, int) else list(dims)
    axes = sorted({d % len(shape) for d in dims if shape[d % len(shape)] == 1})
    return importer.block_builder.emit(relax.op.squeeze(x, axes)) if axes else x


# TVM converters replaced by ours (each says which TVM bug it avoids).
_CONVERT_MAP = {"select.int": _select_int, "squeeze.dim": _squeeze, "squeeze.dims": _squeeze}


def import_to_relax(program: TorchProgram):
    """The program as a Relax IRModule whose `main` takes the user inputs (postcondition in the docstring)."""
    from tvm.relax.frontend.torch import from_exported_program

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's deprecation notices, from its decompositions
            mod = from_exported_program(program.program, unwrap_unit_return_tuple=True,
                                        custom_convert_map=dict(_CONVERT_MAP))
    except Exception as err:  # noqa: BLE001 - the importer raises anything from AssertionError to TVMError
        raise TvmcompressError(f"TVM's PyTorch importer failed: {type(err).__name__}: {_first_line(err)}; this "
                               "op or form is not supported: rewrite that part of the module") from None
    return mod


# -------------------------------------------------------------------------------------------------- stats


def model_stats(program: TorchProgram) -> dict[str, Any]:
    """The report's model section: op histogram of the exported graph, I/O, parameter count and bytes."""
    graph = program.program.graph
    histogram = Counter(str(node.target).removeprefix("aten.") for node in graph.nodes
                        if node.op == "call_function")
    tensors = [*program.program.state_dict.values(), *program.program.constants.values()]
    tensors = [t for t in tensors if hasattr(t, "numel")]
    import torch

    return {
        "producer": f"torch {torch.__version__}",
        "num_nodes": sum(histogram.values()),
        "op_histogram": dict(sorted(histogram.items())),
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in program.inputs],
        "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in program.outputs],
        "parameters": {"count": int(sum(t.numel() for t in tensors)),
                       "bytes": int(sum(t.numel() * t.element_size() for t in tensors))},
        "macs": _macs(graph),
        "unsupported_ops": [],
    }


_CONV_OPS = ("conv1d", "conv2d", "conv3d", "convolution")
_MATMUL_OPS = ("linear", "matmul", "mm", "bmm", "addmm")


def _macs(graph) -> dict[str, Any]:
    """MACs as model_stats counts them for ONNX (one multiply-accumulate per weight use): convolutions =
    output elements x (C_in / groups) x kernel size, matmuls = output elements x K. Other MAC-heavy ops (lstm,
    attention) are listed under `unknown`."""
    layers, unknown = [], []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        op = str(node.target).removeprefix("aten.").split(".")[0]
        out = node.meta.get("val")
        if op in _CONV_OPS and hasattr(out, "shape"):
            weight = node.args[1].meta["val"]
            if op == "convolution" and len(node.args) > 6 and node.args[6]:  # transposed: not counted
                unknown.append(node.name)
                continue
            # weight is [C_out, C_in / groups, *kernel]: its dims past the first are what each output sums over.
            layers.append({"name": node.name, "type": "Conv",
                           "macs": int(out.numel() * _prod(weight.shape[1:]))})
        elif op in _MATMUL_OPS and hasattr(out, "shape"):
            second = node.args[2 if op == "addmm" else 1].meta["val"]
            k = second.shape[-1] if op == "linear" else second.shape[-2]
            layers.append({"name": node.name, "type": "MatMul", "macs": int(out.numel() * k)})
        elif op in ("lstm", "gru", "rnn_tanh", "rnn_relu", "scaled_dot_product_attention",
                    "_native_multi_head_attention"):
            unknown.append(node.name)
    by_type = Counter()
    for layer in layers:
        by_type[layer["type"]] += layer["macs"]
    return {"total": sum(by_type.values()), "by_layer_type": dict(sorted(by_type.items())), "layers": layers,
            "unknown": unknown}


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


# ----------------------------------------------------------------------------------------------- reference


class TorchReference:
    """verify.verify_build's reference for a torch model: the module's own outputs (not ONNX Runtime's)."""

    name = "PyTorch"

    def __init__(self, program: TorchProgram):
        self.program = program

    def sample_calls(self, calibration: Sequence[Mapping[str, np.ndarray]] | None, count: int
                     ) -> tuple[list[dict[str, np.ndarray]], str]:
        """The first calibration batches, else the example inputs and seeded random ones."""
        if calibration:
            return [dict(batch) for batch in list(calibration)[:count]], "calibration"
        from .verify import generate_inputs

        calls = [dict(c) for c in self.program.example_calls]
        # generate_inputs reads an ONNX model only for the bounds of token-id inputs: none here, so integer inputs
        # stay small non-negative numbers.
        calls += generate_inputs(_graph_without_nodes(), self.program.inputs, count=max(count - len(calls), 1))
        return calls, "example_inputs+generated" if self.program.example_calls else "generated"

    def run(self, calls: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        import torch

        results = []
        with torch.no_grad():
            for call in calls:
                args = [torch.from_numpy(np.ascontiguousarray(call[spec.name])) for spec in self.program.inputs]
                value = self.program.reference(*args)
                values = list(value) if isinstance(value, (tuple, list)) else [value]
                results.append({n: v.detach().numpy() for n, v in zip(names, values)})
        return results


def _graph_without_nodes():
    import onnx

    return onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
