"""ONNX frontend: load a model, canonicalize it, check its ops, import it into Relax.

The journey is `load_model` -> `canonicalize` -> `check_supported` -> `import_to_relax`.

Canonical form (the postcondition of `canonicalize`, the precondition of `import_to_relax`):
- every graph input has a static shape, and so has every value of the main graph (outputs and value_info);
- there are no `Constant` nodes and no sparse initializers: every constant is a dense initializer;
- shape computations on static shapes (`Shape -> Gather -> Concat -> Reshape`, ...) are folded into
  initializers, and an `If` on a constant condition is replaced by the branch it takes;
- the op-level structure of the layers is kept: BN folding, MatMul+Add -> Gemm and the like are left to the
  compression passes, which record what they do in the manifest.

This file and `tvmcompress/onnx_ops/` (our converters and the importer subclass that routes to them) are the
only places that know TVM's ONNX importer (`tvm.relax.frontend.onnx`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from .errors import TvmcompressError
from .onnx_graphs import all_graphs, value_types

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_OPSETS",
    "TensorSpec",
    "canonicalize",
    "check_supported",
    "import_to_relax",
    "load_model",
    "model_io",
    "unsupported_ops",
]

# Opsets of the default domain that we accept: TVM 0.27's converters are written and tested for these.
SUPPORTED_OPSETS = range(11, 22)
# A newer opset is accepted too (up to the installed onnx's), node by node: an op is taken in its newer form
# when that form sets no attribute and uses no input that its opset-21 form lacks (opsets 22..28 mostly add
# types), or when one of our converters (tvmcompress.onnx_ops) implements the newer form. Other forms are
# reported as `Op-<version>` by `unsupported_ops`.
_LAST_CHECKED_OPSET = SUPPORTED_OPSETS.stop - 1
_DEFAULT_DOMAINS = ("", "ai.onnx")
# TVM's importer matches on op_type alone. The contrib converters in its map (Attention, FastGelu,
# SkipLayerNormalization, ...) are written for onnxruntime's com.microsoft ops, so that domain is accepted too.
_CONTRIB_DOMAINS = ("com.microsoft",)
# Handled by the importer itself rather than through its convert map.
_IMPORTER_BUILTIN_OPS = frozenset({"If", "Constant"})

# onnxslim patterns that change the layer structure. They are compression decisions (BN folding is a pass of
# ours), so canonicalize leaves them out; its eliminations (Reshape/Transpose/Slice/... chains) are kept.
_SLIM_SKIPPED_FUSIONS = (
    "FusionConvAdd",
    "FusionConvTransposeAdd",
    "FusionConvBN",
    "FusionConvTransposeBN",
    "FusionConvMul",
    "FusionConvTransposeMul",
    "FusionGemm",
    "FusionGemmMul",
    "FusionGemmAdd",
    "FusionPadConv",
    "FusionReduce",
)
# Weight tying would make two layers share one initializer, and per-layer pruning would then touch both.
_SLIM_SKIPPED_OPTIMIZATIONS = ("weight_tying",)


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output. `shape` holds -1 for a dynamic dim (only before `canonicalize`); `dtype` is a numpy
    dtype name such as "float32"."""

    name: str
    shape: tuple[int, ...]
    dtype: str


# --------------------------------------------------------------------------------------------------- loading


def load_model(source: str | os.PathLike | onnx.ModelProto | bytes) -> onnx.ModelProto:
    """Read and check an ONNX model.

    Parameters
    ----------
    source : str, os.PathLike, bytes or onnx.ModelProto
        A path to an ``.onnx`` file, its serialized bytes, or a model already in memory.

    Returns
    -------
    onnx.ModelProto
        The model, checked by ONNX's checker (external data loaded from beside the file).

    Raises
    ------
    TvmcompressError
        The file is missing or unreadable, or it is not a valid ONNX model.

    Examples
    --------
    >>> model = tvmcompress.load_model("examples/digits_cnn.onnx")
    >>> [i.name for i in model.graph.input]
    ['input']
    """
    if isinstance(source, onnx.ModelProto):
        what = "the given ModelProto"
        model = source
        _reject_unloaded_external_data(model, what)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        what = "the given data"
        model = _parse_model_bytes(bytes(source), what)
        _reject_unloaded_external_data(model, what)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        what = str(path)
        if not path.is_file():
            hint = "it is a directory; pass the .onnx file inside it" if path.is_dir() else "check the path"
            raise TvmcompressError(f"model file {path} does not exist: {hint}")
        model = _parse_model_bytes(path.read_bytes(), what)
        _load_external_data(model, path)
    else:
        raise TvmcompressError(
            f"cannot load a model from a {type(source).__name__}: pass a path, bytes or an onnx.ModelProto"
        )
    _check_utf8(model, what)
    _check_model(model, what)
    model = _upgrade_old_opset(model, what)
    _check_opset(model, what)
    return model


def _check_utf8(message, what: str, path: str = "model") -> None:
    """Every `string` field of the model is valid UTF-8. ONNX's proto2 schema does not enforce it, and
    protobuf's upb backend then hands the field over as `bytes`, which breaks every name lookup and the manifest."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            for item in values:
                if isinstance(item, bytes):
                    raise TvmcompressError(
                        f"{what} holds a string that is not valid UTF-8 ({path}.{field.name} = {item[:40]!r}): "
                        "rename it in the exporter, or fix the model with onnx's Python API"
                    )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(values):
                name = getattr(item, "name", "") if hasattr(item, "name") else ""
                where = f"{path}.{field.name}[{name if isinstance(name, str) and name else index}]"
                _check_utf8(item, what, where)


def _parse_model_bytes(data: bytes, what: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError:
        if _looks_like_onnx(data):
            raise TvmcompressError(
                f"{what} is a truncated or corrupt ONNX model (protobuf parsing failed): export or download it again"
            ) from None
        raise TvmcompressError(
            f"{what} is not an ONNX model: pass a .onnx file (export the model to ONNX first)"
        ) from None
    # Protobuf parses many byte strings into some message; a real model starts with its IR version.
    if not _looks_like_onnx(data) or model.ir_version <= 0:
        raise TvmcompressError(f"{what} is not an ONNX model: pass a .onnx file (export the model to ONNX first)")
    if not model.HasField("graph"):  # cut off right after the header fields
        raise TvmcompressError(f"{what} is a truncated ONNX model (it has no graph): export or download it again")
    return model


def _looks_like_onnx(data: bytes) -> bool:
    # A serialized ModelProto starts with field 1 (ir_version, varint): tag 0x08, then a small IR version.
    return len(data) >= 2 and data[0] == 0x08 and 1 <= data[1] <= 30


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    missing = []
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not (path.parent / location).is_file():
                missing.append(location)
    if missing:
        raise TvmcompressError(
            f"{path} keeps weights in external data file(s) {', '.join(sorted(set(missing)))} that are not next "
            f"to it in {path.parent}: copy them there"
        )
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        # ValidationError: onnx refuses a location outside the model's directory (`../x`, an absolute path).
        reason = " ".join(str(err).split())
        raise TvmcompressError(f"cannot read the external data of {path} ({reason}): export the model again") from None


def _reject_unloaded_external_data(model: onnx.ModelProto, what: str) -> None:
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in _all_tensors(model)):
        raise TvmcompressError(
            f"{what} refers to external data files that were not loaded: pass the path of the .onnx file instead"
        )


def check_finite_weights(model: onnx.ModelProto) -> None:
    """Raise naming the first float constant (after canonicalize) that would poison the outputs: a NaN anywhere,
    or an Inf in a weight (an input in _WEIGHT_INPUTS). A NaN or Inf weight makes outputs NaN, which no user
    wants silently. Inf elsewhere stays allowed: attention masks are built from -inf fill values (torch's SDPA
    export, ONNX's own Attention function), which constant folding turns into initializers."""
    weights = {
        name for graph in all_graphs(model.graph) for node in graph.node
        for index, name in enumerate(node.input) if index in _WEIGHT_INPUTS.get(node.op_type, ())
    }
    for graph in all_graphs(model.graph):
        for tensor in graph.initializer:
            is_weight = tensor.name in weights
            _check_finite(tensor, f"weight '{tensor.name}'" if is_weight else f"constant '{tensor.name}'", is_weight)
        for node in graph.node:
            for attr in node.attribute:
                for tensor in [attr.t] * attr.HasField("t") + list(attr.tensors):
                    _check_finite(tensor, f"attribute {attr.name} of {node.op_type} node '{node.name or node.output[0]}'",
                                  inf_is_error=False)


def _check_finite(tensor: onnx.TensorProto, what: str, inf_is_error: bool) -> None:
    if tensor.data_type not in _FLOAT_TYPES:
        return
    try:
        values = numpy_helper.to_array(tensor)
    except ValueError as err:  # raw_data length that does not match dims and data_type
        reason = " ".join(str(err).split())
        raise TvmcompressError(
            f"{what} is damaged: its data does not fit dims {list(tensor.dims)} and its data type ({reason}): "
            "export the model again"
        ) from None
    bad = values[~np.isfinite(values)]  # bfloat16 too (ml_dtypes)
    kind = "NaN" if np.isnan(bad).any() else "Inf" if bad.size and inf_is_error else None
    if kind is not None:
        raise TvmcompressError(
            f"{what} holds {kind} ({bad.size} of {values.size} values are not finite): fix the model, or set "
            "allow_nonfinite_weights (--allow-nonfinite-weights) to compile it as it is"
        )


_FLOAT_TYPES = frozenset(
    getattr(onnx.TensorProto, name) for name in ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16")
)
# The inputs of each op that hold its learned parameters (weights, biases, normalization statistics, scales).
_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1), "Einsum": tuple(range(8)),
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "RMSNormalization": (1,), "PRelu": (1,), "LSTM": (1, 2, 3), "GRU": (1, 2, 3),
    "RNN": (1, 2, 3), "DequantizeLinear": (0, 1), "QuantizeLinear": (1,),
}


def _all_tensors(model: onnx.ModelProto):
    # Same as onnx.external_data_helper._get_all_tensors, which is private.
    for graph in all_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def _check_model(model: onnx.ModelProto, what: str) -> None:
    try:
        if model.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF:
            onnx.checker.check_model(model)
        else:  # the checker serializes its argument; over 2 GiB it only checks the graph.
            onnx.checker.check_graph(model.graph)
    except onnx.checker.ValidationError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TvmcompressError(
            f"{what} is not a valid ONNX model (truncated or corrupt?): {first_line}; export or download it again"
        ) from None


def _check_opset(model: onnx.ModelProto, what: str) -> None:
    opset = _default_opset(model)
    if opset is None:
        raise TvmcompressError(
            f"{what} imports no opset of the default ONNX domain: export it with an opset in "
            f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    if opset not in SUPPORTED_OPSETS and not _LAST_CHECKED_OPSET < opset <= onnx.defs.onnx_opset_version():
        raise TvmcompressError(
            f"{what} uses ONNX opset {opset}, outside the supported {SUPPORTED_OPSETS.start}.."
            f"{SUPPORTED_OPSETS.stop - 1}, and onnx's version converter cannot convert it: export it with opset 17"
        )


def _upgrade_old_opset(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """A model of an opset below SUPPORTED_OPSETS, converted to the first supported one by onnx's version
    converter (whose adapters keep the semantics: Upsample becomes Resize, Scatter becomes ScatterElements, ...);
    other models as they are. A model that the converter cannot convert is reported by `_check_opset`."""
    opset = _default_opset(model)
    if opset is None or opset >= SUPPORTED_OPSETS.start:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, SUPPORTED_OPSETS.start)
        onnx.checker.check_model(upgraded)
    except Exception as err:  # noqa: BLE001 - the converter raises RuntimeError, ValidationError, ...
        logger.debug("onnx's version converter could not convert %s from opset %d: %s", what, opset, err)
        return model
    logger.info("converted %s from ONNX opset %d to %d", what, opset, SUPPORTED_OPSETS.start)
    return upgraded


def _default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return entry.version
    return None


# ---------------------------------------------------------------------------------------------- canonicalize


def canonicalize(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    const_inputs: Mapping[str, float | int | Sequence] | None = None,
) -> onnx.ModelProto:
    """Return the canonical form of `model` (see the module docstring); `model` itself is not changed.

    `input_shapes` fixes the dynamic dims of graph inputs; `const_inputs` turns graph inputs into constants
    (e.g. a scalar `scale` or a fixed `mask`). The result is deterministic: the same arguments give a
    byte-identical model.
    """
    input_shapes = {name: tuple(dims) for name, dims in (input_shapes or {}).items()}
    const_inputs = dict(const_inputs or {})
    canonical = onnx.ModelProto()
    canonical.CopyFrom(model)
    graph = canonical.graph

    # NOTE on order. Names are checked first so that a typo fails before any work. Constant inputs are bound
    # before shapes are fixed, so that a constant input with dynamic dims needs no --input-shape. Constant
    # nodes become initializers before folding: TVM's Constant converter only reads `value`, and our own
    # conversion covers every `value*` form. Folding comes last because it needs static input shapes to turn
    # Shape nodes into constants; the static-shape check then verifies the postcondition.
    _drop_initializer_inputs(graph)
    _check_input_names(graph, input_shapes, const_inputs)
    _bind_const_inputs(graph, const_inputs)
    _fix_input_shapes(graph, input_shapes)
    _constants_to_initializers(canonical)
    # onnxruntime's com.microsoft QLinear* ops (QOperator quantization) become standard Q/DQ + float op before
    # shape inference and folding, which know only standard ops.
    from .onnx_ops.qlinear_contrib import expand_contrib_qlinear

    expand_contrib_qlinear(canonical)
    signature = list(canonical.graph.input)
    canonical = _fold_constants(canonical)
    _fold_remaining_shape_ops(canonical)
    _restore_inputs(canonical.graph, signature)
    if not any(isinstance(d, str) for dims in input_shapes.values() for d in dims):
        # Dynamic shapes keep symbolic dims on purpose: TVM's importer infers them as Relax shape expressions.
        _check_static_shapes(canonical)
    _check_constant_inputs(canonical)
    _check_reshapes(canonical)
    return canonical


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return [vi for vi in graph.input if vi.name not in initializers]


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    # Old exporters list weights as inputs too (IR < 4). They are constants for us, not inputs.
    kept = _graph_inputs(graph)
    if len(kept) != len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)


def _check_input_names(graph: onnx.GraphProto, input_shapes: Mapping, const_inputs: Mapping) -> None:
    names = [vi.name for vi in graph.input]
    for option, given in (("--input-shape", input_shapes), ("const_inputs", const_inputs)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            which = "which is not an input" if len(unknown) == 1 else "which are not inputs"
            raise TvmcompressError(
                f"{option} names {', '.join(repr(n) for n in unknown)}, {which} of the model; "
                f"use one of its inputs: {', '.join(names) or '(none)'}"
            )
    both = sorted(set(input_shapes) & set(const_inputs))
    if both:
        raise TvmcompressError(
            f"input {both[0]!r} is given both a shape and a constant value: a constant needs no shape, drop one"
        )


def _bind_const_inputs(graph: onnx.GraphProto, const_inputs: Mapping) -> None:
    for name, value in const_inputs.items():
        info = next(vi for vi in graph.input if vi.name == name)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        try:
            array = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError):
            raise TvmcompressError(
                f"constant value for input {name!r} is not a number or a list of numbers of type "
                f"{np.dtype(dtype).name}: give one"
            ) from None
        dims = _dims(info)
        if dims is not None:
            if array.ndim != len(dims) and all(isinstance(d, int) for d in dims) and array.size == math.prod(dims):
                array = array.reshape(dims)  # a scalar for a [1] input, a flat list for a [1, 4] input
            if array.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, array.shape)):
                raise TvmcompressError(
                    f"constant value for input {name!r} has shape {list(array.shape)} but the input has shape "
                    f"{_format_dims(dims)}: give a value of that shape"
                )
        graph.initializer.append(numpy_helper.from_array(array, name))
        graph.input.remove(info)
        logger.debug("input %r bound to a constant of shape %s", name, array.shape)


def _fix_input_shapes(graph: onnx.GraphProto, input_shapes: Mapping[str, tuple]) -> None:
    for info in graph.input:
        dims = _dims(info)
        if info.name in input_shapes:
            given = input_shapes[info.name]
            flag = f"--input-shape {info.name}={','.join(str(d) for d in given)}"
            # A str dim is a dynamic shape's symbol (dynamic_shapes.py); it stays a dim_param.
            if any(not isinstance(d, (int, np.integer, str)) or (not isinstance(d, str) and d <= 0) for d in given):
                raise TvmcompressError(f"{flag} has a dim that is not a positive integer: give positive integers")
            if dims is not None and len(dims) != len(given):
                raise TvmcompressError(
                    f"{flag} gives {len(given)} dims but input {info.name!r} has rank {len(dims)} "
                    f"{_format_dims(dims)}: give {len(dims)} dims"
                )
            for axis, (old, new) in enumerate(zip(dims or (), given)):
                # A 0 is a real zero-size dim unless --input-shape replaces it: the first paddle-onnx wrote 0 for
                # an unknown dim (PaddlePaddle/Paddle2ONNX#53), and a zero-size input is never what a user fixes.
                if isinstance(old, int) and old != new and old != 0:
                    keep = ",".join(str(d) if isinstance(d, int) and d > 0 else str(n) for d, n in zip(dims, given))
                    raise TvmcompressError(
                        f"{flag} sets dim {axis} to {new} but that dim of input {info.name!r} is fixed at {old} "
                        f"in the model ({_format_dims(dims)}): keep {old}, as in --input-shape {info.name}={keep}"
                    )
            shape = info.type.tensor_type.shape
            shape.Clear()
            for d in given:
                if isinstance(d, str):
                    shape.dim.add().dim_param = d
                else:
                    shape.dim.add().dim_value = int(d)
    symbols = {d for dims in input_shapes.values() for d in dims if isinstance(d, str)}
    dynamic = [(vi.name, _dims(vi)) for vi in graph.input
               if not _is_static(tuple(1 if d in symbols else d for d in _dims(vi) or ())) or _dims(vi) is None]
    if dynamic:
        what = "; ".join(
            f"input {name!r} has unknown rank"
            if dims is None
            else f"input {name!r} has dynamic dims {_format_dims(dims)}"
            for name, dims in dynamic
        )
        fix = " ".join(f"--input-shape {name}={_suggested_shape(dims)}" for name, dims in dynamic)
        raise TvmcompressError(f"{what}; pass {fix}")
    # Shapes recorded for the old, symbolic inputs may be stale; shape inference fills them in again.
    del graph.value_info[:]
    for out in graph.output:
        if not _is_static(_dims(out)):
            out.type.tensor_type.ClearField("shape")


def _suggested_shape(dims: tuple | None) -> str:
    if dims is None:
        return "D0,D1,..."
    # Only positive dims are accepted by --input-shape; a 0 next to dynamic dims is read as an exporter's
    # placeholder (see _fix_input_shapes), so the advice gives 1 there too.
    return ",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in dims)


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    for graph in all_graphs(model.graph):
        for sparse in graph.sparse_initializer:
            graph.initializer.append(numpy_helper.from_array(_sparse_to_dense(sparse), sparse.values.name))
        del graph.sparse_initializer[:]
        kept = []
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                graph.initializer.append(numpy_helper.from_array(_constant_value(node), node.output[0]))
            else:
                kept.append(node)
        if len(kept) != len(graph.node):
            del graph.node[:]
            graph.node.extend(kept)


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    (attr,) = node.attribute  # the spec allows exactly one
    A = onnx.AttributeProto
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "sparse_value":
        return _sparse_to_dense(attr.sparse_tensor)
    if attr.type == A.FLOAT:
        return np.array(attr.f, dtype=np.float32)
    if attr.type == A.FLOATS:
        return np.array(attr.floats, dtype=np.float32)
    if attr.type == A.INT:
        return np.array(attr.i, dtype=np.int64)
    if attr.type == A.INTS:
        return np.array(attr.ints, dtype=np.int64)
    if attr.type == A.STRING:
        return np.array(attr.s.decode(), dtype=object)
    if attr.type == A.STRINGS:
        return np.array([s.decode() for s in attr.strings], dtype=object)
    raise TvmcompressError(
        f"Constant node {node.name or node.output[0]!r} has an unknown attribute {attr.name!r}: "
        "re-export the model with a standard ONNX exporter"
    )


def _sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:  # linearized indices
        dense.reshape(-1)[indices] = values
    else:  # [NNZ, rank] coordinates
        dense[tuple(indices.T)] = values
    return dense


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference, constant folding (static shape subgraphs, `If` on a constant) and dead-code removal.

    onnxslim does all of it (it evaluates foldable subgraphs with onnxruntime and inlines the taken branch of a
    constant `If`); ONNX's own shape inference then fills in the shapes that onnxslim's symbolic inference
    left out.
    """
    import onnxslim

    slim_logger = logging.getLogger("onnxslim")
    level = slim_logger.level
    try:
        folded = onnxslim.slim(
            model,
            skip_fusion_patterns=list(_SLIM_SKIPPED_FUSIONS),
            skip_optimizations=list(_SLIM_SKIPPED_OPTIMIZATIONS),
        )
    except (IndexError, KeyError, ValueError, TypeError) as err:
        # onnxslim's own shape inference fails on some valid forms (e.g. Resize with `axes`, IndexError in
        # update_outputs_dims). Folding is an optimization: go on with ONNX's shape inference alone, and let the
        # static-shape check and the op check say what is still wrong.
        logger.debug("onnxslim failed (%s: %s); folding with ONNX shape inference only", type(err).__name__, err)
        folded = onnx.ModelProto()
        folded.CopyFrom(model)
    finally:
        slim_logger.setLevel(level)  # slim() sets its logger to ERROR on every call
    if folded is None:  # onnxslim returns None only when its own check fails
        raise RuntimeError("onnxslim returned no model")
    # Keep the identity of the model: onnxslim rebuilds the proto and may drop these fields.
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if getattr(model, field) and not getattr(folded, field):
            setattr(folded, field, getattr(model, field))
    try:
        folded = onnx.shape_inference.infer_shapes(folded, data_prop=True)
    except Exception as err:  # noqa: BLE001 - onnx raises several types; a failure here only loses shape info
        logger.debug("onnx shape inference after folding failed: %s", err)
    return folded


def _fold_remaining_shape_ops(model: onnx.ModelProto) -> None:
    """Replace Shape and Size of static tensors that onnxslim keeps, which are those that are graph outputs.
    TVM would return them as `R.Shape` values, not tensors."""
    graph = model.graph
    known = {vi.name: _dims(vi) for vi in list(graph.input) + list(graph.value_info) + list(graph.output)}
    known.update({t.name: tuple(t.dims) for t in graph.initializer})
    kept = []
    for node in graph.node:
        is_shape_op = node.op_type in ("Shape", "Size") and node.domain in _DEFAULT_DOMAINS
        dims = known.get(node.input[0]) if is_shape_op else None
        if not _is_static(dims):
            kept.append(node)
            continue
        if node.op_type == "Size":
            folded = np.array(math.prod(dims), np.int64)
        else:
            attrs = {a.name: a.i for a in node.attribute}
            folded = np.array(dims[attrs.get("start", 0) : attrs.get("end", len(dims))], np.int64)
        graph.initializer.append(numpy_helper.from_array(folded, node.output[0]))
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _restore_inputs(graph: onnx.GraphProto, signature: list[onnx.ValueInfoProto]) -> None:
    """Put back graph inputs that folding made unused (e.g. a mask read only for its shape): callers feed the
    inputs they know about, in the order they know."""
    if [vi.name for vi in graph.input] != [vi.name for vi in signature]:
        del graph.input[:]
        graph.input.extend(signature)


def _check_static_shapes(model: onnx.ModelProto) -> None:
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    known = {vi.name: vi for vi in list(graph.value_info) + list(graph.output)}
    constants = {t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    bad = []
    for node in graph.node:
        for out in node.output:
            if not out or out in constants or (out in known and not known[out].type.HasField("tensor_type")):
                continue  # sequences and optionals have no shape to check
            dims = _dims(known[out]) if out in known else None
            if not _is_static(dims):
                bad.append((out, dims, node))
    for out in graph.output:
        if out.name not in producers and out.name not in constants:
            bad.append((out.name, _dims(out), None))
    if bad:
        check_supported(model)  # unknown ops are the likelier cause, and the more useful message
        name, dims, node = bad[0]
        where = f" (output of {node.op_type} node {node.name or node.output[0]!r})" if node is not None else ""
        shape = "unknown" if dims is None else _format_dims(dims)
        raise TvmcompressError(
            f"{len(bad)} tensor(s) keep a non-static shape after canonicalization, first {name!r}{where} with "
            f"shape {shape}; tvmcompress needs static shapes: replace data-dependent ops or cut the model before them"
        )


# Inputs that TVM 0.27 must see as constants: given a run-time value, its importer emits a dynamic strided slice
# (Slice) or broadcast (Expand) whose shape function the build cannot lower ("There is no definition of
# I.GlobalVar("shape_func")", "'ExternFunc' object has no attribute 'name'"), even where the graph declares the
# output's static shape (onnx's node tests feed these as graph inputs). The other ops' attribute-like inputs
# either compile with a run-time value (Reshape's shape, Tile's repeats, Squeeze's axes, ...) or are rejected by
# their converter with a message naming the node (ReduceSum's axes, TopK's k, Split's split, Resize's sizes).
_CONSTANT_INPUTS: dict[str, dict[int, str]] = {
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Expand": {1: "shape"},
}


def _check_constant_inputs(model: onnx.ModelProto) -> None:
    """Raise for the first node whose inputs in _CONSTANT_INPUTS canonicalization left non-constant, naming the
    node, those inputs and the graph inputs they come from (to bind with --const-input)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    graph_inputs = {vi.name for vi in graph.input}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        slots = _CONSTANT_INPUTS.get(node.op_type, {}) if node.domain in _DEFAULT_DOMAINS else {}
        dynamic = [(role, node.input[i]) for i, role in slots.items()
                   if i < len(node.input) and node.input[i] and node.input[i] not in constants]
        if not dynamic:
            continue
        sources = []
        for _, name in dynamic:
            sources += [s for s in _graph_input_sources(name, producers, graph_inputs) if s not in sources]
        given = ", ".join(f"{role} from {'graph input' if name in graph_inputs else 'run-time value'} {name!r}"
                          for role, name in dynamic)
        fix = (f"bind {'it' if len(sources) == 1 else 'them'} to constants with "
               f"{' '.join(f'--const-input {s}=V1,V2,...' for s in sources)} (const_inputs in the API)"
               if sources else "re-export the model with them constant")
        raise TvmcompressError(
            f"{node.op_type} node {node.name or node.output[0]!r} takes its {given}; TVM compiles {node.op_type} "
            f"only with constant {', '.join(slots.values())}: {fix}"
        )


def _graph_input_sources(name: str, producers: Mapping[str, onnx.NodeProto], graph_inputs: set[str]) -> list[str]:
    """The graph inputs that the value `name` is computed from, in the order found."""
    found, seen, stack = [], set(), [name]
    while stack:
        value = stack.pop()
        if value in seen or not value:
            continue
        seen.add(value)
        if value in graph_inputs:
            found.append(value)
        elif value in producers:
            stack.extend(reversed(producers[value].input))
    return found


def _check_reshapes(model: onnx.ModelProto) -> None:
    """Catch reshapes whose element counts disagree. ONNX shape inference lets them pass; they come from
    exporters that traced a size as a constant, and fail later in TVM (or at run time) with a worse message."""
    graph = model.graph
    shapes = {vi.name: _dims(vi) for vi in list(graph.input) + list(graph.value_info)}
    shapes.update({t.name: tuple(t.dims) for t in graph.initializer})
    targets = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in targets or not _is_static(shapes.get(node.input[0])):
            continue
        old = shapes[node.input[0]]
        new = [int(d) for d in numpy_helper.to_array(targets[node.input[1]]).reshape(-1)]
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        new = [old[i] if d == 0 and not allowzero and i < len(old) else d for i, d in enumerate(new)]
        known = math.prod(d for d in new if d != -1)
        size = math.prod(old)
        fits = size % known == 0 if -1 in new and known else size == known
        if not fits:
            raise TvmcompressError(
                f"Reshape node {node.name or node.output[0]!r} cannot reshape {_format_dims(old)} ({size} elements) "
                f"to {_format_dims(tuple(new))}: the exporter fixed a size when it traced the model; use the input "
                "shapes it was exported with, or re-export it with those dims dynamic"
            )


# -------------------------------------------------------------------------------------------- op support


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Sorted unique op types that we cannot import, searched in subgraphs too: ops that neither TVM's ONNX
    importer nor our converters (`tvmcompress.onnx_ops`) convert (`domain::Op` outside the default domain), op
    forms of an opset newer than SUPPORTED_OPSETS that nothing converts (`Op-<version>`), forms that our
    converters reject (`Op(attr=value)`), and nodes that read or write an element type that TVM computes wrongly
    (`Op(FLOAT8E4M3FN)`), unless our converter for the op converts that type (`onnx_ops.converts_type`: Cast and
    CastLike on float8)."""
    from . import onnx_ops

    convert_map = _tvm_convert_map()
    opset = _default_opset(model) or _LAST_CHECKED_OPSET
    found = set()
    for graph in all_graphs(model.graph):
        types = value_types(graph)
        for node in graph.node:
            for elem_type in _node_types(node, types):
                if (elem_type in _UNSUPPORTED_TYPES and not onnx_ops.converts_type(node, opset, elem_type)) or (
                    (node.op_type, elem_type) in _UNSUPPORTED_OP_TYPES
                ):
                    found.add(f"{node.op_type}({onnx.TensorProto.DataType.Name(elem_type)})")
            if node.domain in _DEFAULT_DOMAINS:
                ours = onnx_ops.converter_for(node.op_type, opset)
                if ours is None and node.op_type not in convert_map and node.op_type not in _IMPORTER_BUILTIN_OPS:
                    found.add(node.op_type)
                elif ours is None and opset > _LAST_CHECKED_OPSET:
                    form = _newer_op_form(node, opset)
                    if form is not None:
                        found.add(form)
                if ours is not None:
                    reason = onnx_ops.unsupported_form(node, opset)
                    if reason:
                        found.add(reason)
            elif node.domain not in _CONTRIB_DOMAINS or node.op_type not in convert_map:
                if not (node.domain == "com.microsoft" and node.op_type in onnx_ops.CONTRIB_QLINEAR_OPS):  # expanded
                    found.add(f"{node.domain}::{node.op_type}")
    return sorted(found)


# Element types that TVM 0.27 stores but computes wrongly (float8: wrong rounding and saturation; packed int4 /
# int2 / float4: wrong unpacking) or cannot run. A node that reads or writes one is reported as `Op(TYPE)`.
_UNSUPPORTED_TYPES = frozenset(
    getattr(onnx.TensorProto, name)
    for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
                 "INT4", "UINT4", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, name)
)


# Op and element type pairs that TVM 0.27 cannot compile or run although it imports them (conformance found them):
# TopK on uint64 (TVM's sort has no uint64 kernel) and Unique on bfloat16 (ConvertLayout fails on its output).
_UNSUPPORTED_OP_TYPES = frozenset({("TopK", onnx.TensorProto.UINT64), ("Unique", onnx.TensorProto.BFLOAT16)})



def _node_types(node: onnx.NodeProto, types: Mapping[str, int]):
    for name in list(node.input) + list(node.output):
        if name in types:
            yield types[name]
    for attr in node.attribute:
        if attr.name in ("to", "output_dtype", "dtype") and attr.type == onnx.AttributeProto.INT:
            yield attr.i
        if attr.type == onnx.AttributeProto.TENSOR:
            yield attr.t.data_type


def _newer_op_form(node: onnx.NodeProto, opset: int) -> str | None:
    """`Op-<version>` when `node`, in its form at `opset`, sets an attribute or uses an input or output that the
    op's form at _LAST_CHECKED_OPSET lacks (or the op is newer than that); None when the old form covers it."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None  # not an ONNX op: the converter lookup decides
    if schema.since_version <= _LAST_CHECKED_OPSET:
        return None
    tvm_converter = _tvm_convert_map().get(node.op_type)
    tvm_versions = [int(n.removeprefix("_impl_v")) for n in dir(tvm_converter) if n.startswith("_impl_v")]
    if tvm_versions and max(tvm_versions) >= schema.since_version:
        return None  # TVM's converter is written for this form
    try:
        old = onnx.defs.get_schema(node.op_type, _LAST_CHECKED_OPSET, "")
    except onnx.defs.SchemaError:
        return f"{node.op_type}-{schema.since_version}"
    new_attributes = {a.name for a in node.attribute} - set(old.attributes)
    if new_attributes or len(node.input) > old.max_input or len(node.output) > old.max_output:
        return f"{node.op_type}-{schema.since_version}"
    return None


def check_supported(model: onnx.ModelProto) -> None:
    """Raise `TvmcompressError` naming every op that `unsupported_ops` finds."""
    missing = unsupported_ops(model)
    if missing:
        raise TvmcompressError(
            f"the model uses {len(missing)} op type(s) that TVM's ONNX importer cannot convert: {', '.join(missing)}; "
            "replace them (or re-export the model without them, or with opset 21 for an `Op-<version>` form) and "
            "try again"
        )
    check_windows_fit(model)


# Ops that slide a window over spatial axes: an output with a spatial size of 0 means the window does not fit.
_WINDOW_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})


def check_windows_fit(model: onnx.ModelProto) -> None:
    """Refuse a convolution or pooling whose window, dilated, does not fit its padded input (an output size of 0
    or less). ONNX's checker accepts such a graph and TVM's conv legalization then fails deep in the build
    (fuzzed models, seeds 369 and 834). Sizes come from the input's inferred shape and the node's attributes (or
    the weight's dims), not from the output's recorded shape, which shape inference may leave negative or absent."""
    graph = model.graph
    shapes = {vi.name: _dims(vi) for vi in [*graph.input, *graph.value_info, *graph.output]}
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type not in _WINDOW_OPS or not node.input:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            continue  # SAME_*: the output is ceil(input / stride), never empty
        dims = shapes.get(node.input[0])
        if not dims or len(dims) < 3 or not all(isinstance(d, int) and d >= 0 for d in dims[2:]):
            continue
        spatial = dims[2:]
        kernel = attrs.get("kernel_shape")
        if kernel is None and len(node.input) > 1 and node.input[1] in weights:
            kernel = weights[node.input[1]][2:]
        if kernel is None or len(kernel) != len(spatial):
            continue
        n = len(spatial)
        pads = list(attrs.get("pads", [0] * 2 * n))
        strides = list(attrs.get("strides", [1] * n))
        dilations = list(attrs.get("dilations", [1] * n))
        if len(pads) != 2 * n or len(strides) != n or len(dilations) != n or min(strides, default=1) < 1:
            continue
        for i, size in enumerate(spatial):
            window = dilations[i] * (kernel[i] - 1) + 1
            if size + pads[i] + pads[i + n] < window:
                raise TvmcompressError(
                    f"{node.op_type} node '{node.name or node.output[0]}': its window ({window} on spatial axis {i},"
                    f" kernel {list(kernel)}, dilations {dilations}) is larger than its padded input "
                    f"{list(dims)} (pads {pads}), so its output would be empty; fix the model's shapes or pads, or "
                    "pass a larger --input-shape"
                )


def _tvm_convert_map() -> dict:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map  # private, but the only list there is

    return _get_convert_map()


# ---------------------------------------------------------------------------------------------------- io


def model_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph inputs (initializers excluded) and outputs, in graph order."""
    return (
        [_tensor_spec(vi) for vi in _graph_inputs(model.graph)],
        [_tensor_spec(vi) for vi in model.graph.output],
    )


def _tensor_spec(info: onnx.ValueInfoProto) -> TensorSpec:
    dims = _dims(info)
    shape = tuple(d if isinstance(d, int) else -1 for d in dims) if dims is not None else ()
    elem_type = info.type.tensor_type.elem_type
    try:
        dtype = _np_dtype_name(elem_type)
    except KeyError:  # a number that is no ONNX element type (the checker does not look at graph outputs' types)
        raise TvmcompressError(
            f"tensor '{info.name}' has element type {elem_type}, which is not an ONNX data type: export the model again"
        ) from None
    return TensorSpec(info.name, shape, dtype)


def _np_dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


# ------------------------------------------------------------------------------------------------ import


def import_to_relax(model: onnx.ModelProto, symbols: Mapping[str, Any] | None = None):
    """Import a canonical model into Relax, weights bound as constants. Returns a `tvm.IRModule` whose `main`
    takes the graph inputs in order.

    `symbols` (dynamic shapes): a tir.Var for each `dim_param` that the inputs may keep; every other dim is static.

    Raises `TvmcompressError` for unsupported ops and for nodes that TVM's importer fails on, naming the node.
    """
    from . import onnx_ops
    from .onnx_ops.importer import from_onnx

    check_supported(model)
    inputs, _ = model_io(model)
    symbols = dict(symbols or {})
    shape_dict = {spec.name: list(spec.shape) for spec in inputs}
    for info in _graph_inputs(model.graph):
        if info.name in shape_dict and symbols:
            shape_dict[info.name] = [symbols.get(d, -1) if isinstance(d, str) else d for d in _dims(info) or ()]
    dynamic = [name for name, dims in shape_dict.items() if any(isinstance(d, int) and d < 0 for d in dims)]
    if dynamic:
        raise TvmcompressError(
            f"input(s) {', '.join(dynamic)} have dynamic dims: canonicalize the model with --input-shape first"
        )
    stdout = io.StringIO()
    try:
        # The importer prints to stdout on failure and warns about renamed inputs: route both to the log.
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
            warnings.simplefilter("always")
            mod = from_onnx(
                model,
                shape_dict=shape_dict,
                dtype_dict={spec.name: spec.dtype for spec in inputs},
            )
    except Exception as err:  # noqa: BLE001 - the importer raises anything from KeyError to TVMError
        if stdout.getvalue():
            logger.debug("TVM importer output: %s", stdout.getvalue().strip())
        if isinstance(err, TvmcompressError):  # one of our converters rejecting a form, with its own message
            raise
        node = _failing_node(err)
        # onnx_ops.importer renamed the nodes it routes to our converters.
        op_type = node.op_type.removeprefix(onnx_ops.ROUTED_PREFIX) if node is not None else ""
        where = f"node {node.name or node.output[0]!r} ({op_type})" if node is not None else "the model"
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[0].rstrip(".") if lines else "no message"
        raise TvmcompressError(
            f"TVM's ONNX importer failed on {where}: {type(err).__name__}: {detail}; this form of the op is not "
            "supported: re-export the model with a different opset or replace the op"
        ) from err
    for warning in caught:
        logger.debug("TVM importer: %s", warning.message)
    return mod


def _failing_node(err: BaseException) -> onnx.NodeProto | None:
    """The ONNX node that TVM's importer was converting when `err` was raised, read from the traceback.

    The importer's loops (`_construct_nodes`, `_convert_subgraph`) keep the current node in a local `node`; if a
    later TVM renames it we only lose the node name in the message.
    """
    tb = err.__traceback__
    node = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("node")
        if isinstance(candidate, onnx.NodeProto):
            node = candidate  # keep the innermost one: a node inside an If branch
        tb = tb.tb_next
    return node


# --------------------------------------------------------------------------------------------- helpers



def _dims(info: onnx.ValueInfoProto) -> tuple[int | str, ...] | None:
    """The dims of a tensor value: an int per static dim, the symbol (or "?", or "-1") per dynamic one; None if
    the rank is unknown.

    Dynamic dims come in three forms: a `dim_param` symbol (the ONNX spec's form), a dim with neither field set
    (onnx.helper's `None`), and a negative `dim_value`, which Paddle2ONNX wrote until late 2022
    (`x: [-1, 3, -1, -1]`, PaddlePaddle/Paddle2ONNX#928) and which onnxruntime also reads as dynamic. All three
    are dynamic here, so `--input-shape` fixes them.
    """
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        (d.dim_value if d.dim_value >= 0 else str(d.dim_value)) if d.HasField("dim_value") else (d.dim_param or "?")
        for d in tensor_type.shape.dim
    )


def _is_static(dims: tuple | None) -> bool:
    return dims is not None and all(isinstance(d, int) and d >= 0 for d in dims)


def _format_dims(dims: tuple) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
