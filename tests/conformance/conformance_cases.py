"""The ONNX node tests as conformance cases: build them, decide their scope, find their attribute-like inputs.

The cases come from the installed onnx package (`onnx.backend.test.loader.load_node_model_tests()`), which
builds every model and runs its numpy reference; that takes ~30 s, so the built cases are cached (pickled) in
the user's cache directory, keyed by the onnx version.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

# Op types whose node tests are out of scope: training-only ops (losses and optimizers; TVM compiles inference
# graphs), and ops that exist only to make or consume strings, sequences or optionals, which have no tensor
# form in a compiled library.
TRAINING_OPS = frozenset({
    "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "Adagrad", "Adam", "Momentum", "Gradient",
})
TRAINING_DOMAINS = frozenset({"ai.onnx.preview.training"})

# Inputs that carry what an attribute carried in earlier opsets, or that only set an output shape. The node
# tests feed them as graph inputs; exported inference models hold them as constants (initializers, Constant
# nodes or folded shape subgraphs). The runner binds them to their test values with canonicalize's
# const_inputs, and CONFORMANCE.md lists every op and slot here. Keys: op type -> {input index: kind}.
ATTRIBUTE_LIKE_INPUTS: dict[str, dict[int, str]] = {
    "Reshape": {1: "shape"},
    "CastLike": {1: "target_type (only its dtype is read)"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "Expand": {1: "shape"},
    "ConstantOfShape": {0: "shape"},
    "Tile": {1: "repeats (shape)"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "ReduceSum": {1: "axes"},
    "ReduceMean": {1: "axes"},
    "ReduceMax": {1: "axes"},
    "ReduceMin": {1: "axes"},
    "ReduceProd": {1: "axes"},
    "ReduceL1": {1: "axes"},
    "ReduceL2": {1: "axes"},
    "ReduceLogSum": {1: "axes"},
    "ReduceLogSumExp": {1: "axes"},
    "ReduceSumSquare": {1: "axes"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "Split": {1: "split"},
    "TopK": {1: "k"},
    "CumSum": {1: "axis"},
    "CumProd": {1: "axis"},
    "Trilu": {1: "k"},
    "CenterCropPad": {1: "shape"},
    "AffineGrid": {1: "size"},
    "Col2Im": {1: "image_shape", 2: "block_shape"},
    "OneHot": {1: "depth"},
    "Clip": {1: "min", 2: "max"},
    "DFT": {1: "dft_length", 2: "axis"},
    "STFT": {1: "frame_step", 3: "frame_length"},
    "HannWindow": {0: "size"},
    "HammingWindow": {0: "size"},
    "BlackmanWindow": {0: "size"},
}


_CACHE_FORMAT = 2  # bump when Case or its building changes


@dataclass
class Case:
    """One node test: a model, its inputs (in graph-input order) and its expected outputs (graph-output order)."""

    name: str
    model_bytes: bytes
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    rtol: float
    atol: float
    op_types: list[str] = field(default_factory=list)

    @property
    def op(self) -> str:
        """The op the test is about, read from its name (expanded tests hold only the ops of the function body)."""
        return op_of_test(self.name, self.op_types)

    def model(self) -> onnx.ModelProto:
        return onnx.load_model_from_string(self.model_bytes)


def op_of_test(name: str, op_types: list[str]) -> str:
    """The longest ONNX op name that the test name starts with (ignoring case and underscores); else the graph's
    first op that is not Constant."""
    lowered = name.removeprefix("test_").lower().replace("_", "")
    for alias, op in _NAME_ALIASES.items():
        if lowered.startswith(alias):
            return op
    best = ""
    for op in _op_names():
        key = op.lower()
        if len(key) > len(best) and lowered.startswith(key):
            best = op
    if best:
        return best
    ops = [op for op in op_types if op != "Constant"] or op_types or ["?"]
    return ops[0]


_OP_NAMES: list[str] = []
# Test names that do not start with their op's name.
_NAME_ALIASES = {"simplernn": "RNN", "batchnorm": "BatchNormalization", "instancenorm": "InstanceNormalization",
                 "layernormalization": "LayerNormalization", "softmaxcrossentropy": "SoftmaxCrossEntropyLoss",
                 "nllloss": "NegativeLogLikelihoodLoss", "sce": "SoftmaxCrossEntropyLoss", "basicconvwithoutpadding": "Conv",
                 "basicconvwithpadding": "Conv", "convwithstrides": "Conv", "convwithautopad": "Conv",
                 "basicdeformconv": "DeformConv", "deformconv": "DeformConv", "reducelogsumexp": "ReduceLogSumExp",
                 "globalaveragepool": "GlobalAveragePool", "qlinearconv": "QLinearConv"}


def _op_names() -> list[str]:
    if not _OP_NAMES:
        _OP_NAMES.extend({s.name for s in onnx.defs.get_all_schemas_with_history()})
    return _OP_NAMES


def cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tvmcompress" / f"onnx-{onnx.__version__}-node-tests-v{_CACHE_FORMAT}.pkl"


def load_cases() -> list[Case]:
    """All node tests of the installed onnx, sorted by name (built once, then read from the cache)."""
    path = cache_path()
    if path.is_file():
        with open(path, "rb") as f:
            return pickle.load(f)
    from onnx.backend.test import loader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference implementations warn on purpose (overflow, log(0))
        tests = loader.load_node_model_tests()
    cases = []
    for test in tests:
        (inputs, outputs), *_ = test.data_sets
        model = test.model
        cases.append(Case(
            name=test.name,
            model_bytes=model.SerializeToString(),
            inputs=[_as_array(a) for a in inputs],
            outputs=[_as_array(a) for a in outputs],
            rtol=test.rtol,
            atol=test.atol,
            op_types=[n.op_type for n in model.graph.node],
        ))
    cases.sort(key=lambda c: c.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(cases, f)
    os.replace(tmp, path)
    return cases


def _as_array(value):
    """Tensors as NumPy arrays (TensorProto inputs hold types NumPy lacks: bfloat16, float8, int4 via ml_dtypes);
    sequences, maps and optionals stay as they are."""
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    return value


def out_of_scope_reason(case: Case) -> str | None:
    """Why a case is out of scope ("training", "string", "sequence/optional"), or None when it is in scope."""
    model = case.model()
    graph = model.graph
    if case.op in TRAINING_OPS:  # also the `_expanded` tests of a loss, which hold only its function body
        return "training"
    for node in _all_nodes(graph):
        if node.op_type in TRAINING_OPS or node.domain in TRAINING_DOMAINS:
            return "training"
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    for vi in values:
        kind = vi.type.WhichOneof("value")
        if kind in ("sequence_type", "optional_type", "map_type"):
            return "sequence/optional"
        if kind == "tensor_type" and vi.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            return "string"
    for array in list(case.inputs) + list(case.outputs):
        if not isinstance(array, np.ndarray):
            return "sequence/optional"
        if array.dtype.kind in "OSU":
            return "string"
    for node in _all_nodes(graph):
        if "Sequence" in node.op_type or node.op_type.startswith("Optional") or node.op_type.startswith("String"):
            return "sequence/optional" if not node.op_type.startswith("String") else "string"
    return None


def attribute_like_inputs(case: Case) -> dict[str, str]:
    """Graph inputs that feed only attribute-like slots (see ATTRIBUTE_LIKE_INPUTS): name -> "Op.kind"."""
    graph = case.model().graph
    initializers = {t.name for t in graph.initializer}
    inputs = [vi.name for vi in graph.input if vi.name not in initializers]
    uses: dict[str, list[str | None]] = {name: [] for name in inputs}
    for node in _all_nodes(graph):
        slots = ATTRIBUTE_LIKE_INPUTS.get(node.op_type, {}) if node.domain in ("", "ai.onnx") else {}
        for index, name in enumerate(node.input):
            if name in uses:
                kind = slots.get(index)
                uses[name].append(f"{node.op_type}.{kind}" if kind else None)
    return {name: kinds[0] for name, kinds in uses.items() if kinds and all(kinds)}


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


# ONNX Cast: "Casting from floating point to fixed point: undefined if OOR (out of range)". onnx's node tests of
# float -> int4 / uint4 / int2 / uint2 (Cast, CastLike and its expanded body) feed values out of the target's
# range, and their reference is whatever the installed ml_dtypes gives there: the low bits before ml_dtypes 0.7,
# 0 from 0.7 on (24 cases flip with the version). The runner compares only the elements ONNX defines, so results
# are the same under any ml_dtypes; pinning ml_dtypes instead would only choose which undefined answer counts,
# and would hold back a runtime dependency (onnx and our sub-byte IO use it) for a test's sake. Our own rule
# out of range (truncate, keep the low bits) is tested in tests/frontend/test_sub_byte.py.
SUB_BYTE_INTEGER_RANGES = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15), TensorProto.INT2: (-2, 1),
                           TensorProto.UINT2: (0, 3)}
_CAST_OPS = ("Cast", "CastLike")


def defined_elements(case: Case) -> list[np.ndarray | None]:
    """Per graph output, a boolean mask of the elements whose expected value ONNX defines, or None when all are.
    Only a graph output made by a Cast / CastLike of a float graph input to an integer sub-byte type has undefined
    elements: those whose input, truncated toward zero, is out of the type's range, NaN or infinite."""
    graph = case.model().graph
    initializers = {t.name for t in graph.initializer}
    inputs = dict(zip([vi.name for vi in graph.input if vi.name not in initializers], case.inputs))
    producers = {out: node for node in graph.node for out in node.output}
    masks: list[np.ndarray | None] = []
    for out in graph.output:
        node = producers.get(out.name)
        limits = SUB_BYTE_INTEGER_RANGES.get(out.type.tensor_type.elem_type)
        is_cast = node is not None and node.op_type in _CAST_OPS and node.domain in ("", "ai.onnx")
        source = inputs.get(node.input[0]) if is_cast and limits is not None else None
        if source is None or source.dtype.kind != "f":
            masks.append(None)
            continue
        whole = np.trunc(source.astype(np.float64))  # NaN and inf stay, and compare False below
        masks.append((whole >= limits[0]) & (whole <= limits[1]))
    return masks
