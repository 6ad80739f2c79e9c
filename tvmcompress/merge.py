"""Model fusion: several ONNX models on the same inputs merged into one graph whose outputs combine theirs
(an ensemble), which the usual pipeline then compiles into one artifact.

    merged = merge_models([a, b, c], Combine.parse("mean", 3))            # onnx.ModelProto
    tvmcompress merge A.onnx B.onnx C.onnx -o merged.onnx --combine mean
    tvmcompress compile --ensemble A.onnx,B.onnx --combine weighted:0.3,0.7 -o out/

Steps, in order (each needs the one before):
1. `check_members`: every member takes the same inputs (names, dtypes, static shapes), after `input_map`
   renames; their outputs pair up by position. Anything else is a TvmcompressError naming the member.
2. Prefix: member i's values, nodes and initializers get the prefix `m{i}/` (graph inputs keep their names), so
   no two members' names clash. Subgraphs (If/Loop bodies) are renamed with the same map.
3. Deduplicate: identical initializers (dtype, shape, bytes) become one; then, in topological order, a node
   whose op, attributes and (already deduplicated) inputs equal an earlier node's is dropped and its outputs
   read the earlier one's. A shared backbone (same weights, same ops on the same inputs) is therefore
   computed once; heads that differ stay. Random ops and nodes with subgraphs are never merged.
4. Combine output k of every member into output k (named as member 0's):
   mean (ONNX Mean), weighted (sum of w_i * o_i), vote (per class, how many members rank it first: argmax of
   the result is the majority class, ties to the lower index), concat (on the last axis), stack (a new leading
   axis: [members, ...]).

What the merge did (members, combine, how many initializers and nodes were shared) is in the merged model's
metadata_props under `tvmcompress.merge`, so `inspect` and the artifact's source hash see it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import TvmcompressError

COMBINE_KINDS = ("mean", "vote", "weighted", "concat", "stack")
METADATA_KEY = "tvmcompress.merge"
# Ops whose output is not a function of their inputs: two of them are two draws, never one.
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "Dropout"}


@dataclass(frozen=True)
class Combine:
    """How the members' outputs combine. `weights` only for "weighted" (one per member)."""

    kind: str
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in COMBINE_KINDS:
            raise TvmcompressError(f"combine must be one of {', '.join(COMBINE_KINDS)} (weighted:W1,W2,...), "
                                   f"got '{self.kind}'")
        if (self.kind == "weighted") != bool(self.weights):
            raise TvmcompressError("combine weighted takes one weight per member, as weighted:0.3,0.7; "
                                   "the other kinds take none")
        if any(not np.isfinite(w) for w in self.weights):
            raise TvmcompressError(f"combine weights must be finite numbers, got {list(self.weights)}")

    @classmethod
    def parse(cls, text: str, members: int) -> Combine:
        """'mean', 'vote', 'concat', 'stack' or 'weighted:0.3,0.7' (as many weights as members)."""
        kind, _, rest = text.partition(":")
        weights: tuple[float, ...] = ()
        if kind == "weighted":
            try:
                weights = tuple(float(w) for w in rest.split(","))
            except ValueError:
                raise TvmcompressError(f"combine '{text}': weights must be numbers, as weighted:0.3,0.7") from None
            if len(weights) != members:
                raise TvmcompressError(f"combine '{text}' gives {len(weights)} weights for {members} members: "
                                       "give one per member")
        elif rest:
            raise TvmcompressError(f"combine '{text}': only weighted takes values after ':'")
        return cls(kind, weights)


@dataclass
class _Counts:
    initializers_shared: int = 0
    nodes_shared: int = 0
    shared_ops: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- checking


def _signature(graph: onnx.GraphProto) -> list[tuple[str, int, tuple]]:
    """(name, elem_type, dims) of each real graph input (initializers excluded); dims hold names of dynamic ones."""
    initializers = {t.name for t in graph.initializer}
    result = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
        result.append((value.name, tensor.elem_type, dims))
    return result


def _describe(elem_type: int, dims: tuple) -> str:
    return f"{helper.tensor_dtype_to_np_dtype(elem_type).name} {list(dims)}"


def check_members(members: Sequence[onnx.ModelProto], labels: Sequence[str]) -> None:
    """Same inputs (name, dtype, shape) and the same number of outputs in every member (after input renames)."""
    if len(members) < 2:
        raise TvmcompressError(f"merge needs at least 2 models, got {len(members)}")
    first = _signature(members[0].graph)
    for model, label in zip(members[1:], labels[1:]):
        other = _signature(model.graph)
        names, other_names = [n for n, _, _ in first], [n for n, _, _ in other]
        if sorted(names) != sorted(other_names):
            raise TvmcompressError(
                f"{label} takes inputs {other_names}, {labels[0]} takes {names}: members must share their inputs; "
                "rename with input_map (--input-map MEMBER:THEIRS=OURS)")
        by_name = {n: (t, d) for n, t, d in other}
        for name, elem_type, dims in first:
            if by_name[name] != (elem_type, dims):
                raise TvmcompressError(
                    f"input '{name}' is {_describe(*by_name[name])} in {label} but {_describe(elem_type, dims)} in "
                    f"{labels[0]}: members must take the same input (same preprocessing, dtype and shape)")
        if len(model.graph.output) != len(members[0].graph.output):
            raise TvmcompressError(f"{label} has {len(model.graph.output)} outputs, {labels[0]} has "
                                   f"{len(members[0].graph.output)}: members' outputs combine by position")


def _check_outputs(members: Sequence[onnx.ModelProto], labels: Sequence[str], combine: Combine) -> None:
    """Outputs that combine must agree: the same dtype and shape (concat: all but the last dim). ONNX's Mean and
    Sum would otherwise broadcast a [1, 1] against a [1, 10] without a word."""
    def described(value):
        tensor = value.type.tensor_type
        return tensor.elem_type, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim)

    for k, first in enumerate(members[0].graph.output):
        elem_type, dims = described(first)
        for model, label in zip(members[1:], labels[1:]):
            other_type, other_dims = described(model.graph.output[k])
            comparable = (dims[:-1], other_dims[:-1]) if combine.kind == "concat" else (dims, other_dims)
            if other_type != elem_type or comparable[0] != comparable[1]:
                raise TvmcompressError(
                    f"output {k + 1} is {_describe(other_type, other_dims)} in {label} but "
                    f"{_describe(elem_type, dims)} in {labels[0]}: combine {combine.kind} needs "
                    + ("the same dims but the last" if combine.kind == "concat" else "the same dtype and shape"))


def _rename_inputs(model: onnx.ModelProto, renames: Mapping[str, str], label: str) -> onnx.ModelProto:
    """A copy of `model` whose graph input THEIRS is called OURS, for each THEIRS=OURS in `renames`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    names = {v.name for v in model.graph.input}
    missing = sorted(set(renames) - names)
    if missing:
        raise TvmcompressError(f"input_map for {label} names {missing}, which it does not take (it takes "
                               f"{sorted(names)})")
    _rename_graph(model.graph, dict(renames))
    return model


# --------------------------------------------------------------------------------------------------- merging


def _rename_graph(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    """Rename every value of `graph` (and of its subgraphs, which may read outer values) by `names`."""
    def new(name: str) -> str:
        return names.get(name, name) if name else name

    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = new(value.name)
    for tensor in graph.initializer:
        tensor.name = new(tensor.name)
    for node in graph.node:
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                _rename_graph(sub, names)


def _graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every value and initializer name defined in `graph` or its subgraphs."""
    found = {t.name for t in graph.initializer} | {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    for node in graph.node:
        found.update(n for n in node.output if n)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                found |= _graph_names(sub)
    return found


def _prefixed(model: onnx.ModelProto, index: int, inputs: set[str]) -> onnx.GraphProto:
    graph = onnx.GraphProto.FromString(model.graph.SerializeToString())
    prefix = f"m{index}/"
    _rename_graph(graph, {n: prefix + n for n in _graph_names(graph) if n not in inputs})
    for i, node in enumerate(graph.node):
        node.name = prefix + (node.name or f"{node.op_type}_{i}")
    return graph


def _common_opsets(members: Sequence[onnx.ModelProto], labels: Sequence[str]) -> list[onnx.ModelProto]:
    """Members brought to one version per domain: the default domain is converted to the newest member's."""
    def default(model):
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    target = max(v for v in (default(m) for m in members) if v is not None)
    result = []
    for model, label in zip(members, labels):
        if default(model) not in (None, target):
            try:
                model = onnx.version_converter.convert_version(model, target)
            except Exception as err:  # noqa: BLE001 - the converter raises RuntimeError or its own errors
                raise TvmcompressError(f"{label} has opset {default(model)}, another member {target}, and onnx "
                                       f"cannot convert it ({str(err).splitlines()[0][:120]}): export the members "
                                       "with one opset") from None
        result.append(model)
    for domain in {o.domain for m in result for o in m.opset_import if o.domain not in ("", "ai.onnx")}:
        versions = {o.version for m in result for o in m.opset_import if o.domain == domain}
        if len(versions) > 1:
            raise TvmcompressError(f"members use versions {sorted(versions)} of op domain '{domain}': export "
                                   "them with one version")
    return result


def _tensor_key(tensor: onnx.TensorProto) -> tuple:
    array = numpy_helper.to_array(tensor)
    return (tensor.data_type, tuple(tensor.dims), array.tobytes())


def _deduplicate(graph: onnx.GraphProto, counts: _Counts) -> dict[str, str]:
    """Share identical initializers, then drop nodes that compute what an earlier node already does (same op,
    attributes and inputs). Returns {dropped value: the value that replaces it}."""
    alias: dict[str, str] = {}
    kept, seen = [], {}
    for tensor in graph.initializer:
        key = _tensor_key(tensor)
        if key in seen:
            alias[tensor.name] = seen[key]
            counts.initializers_shared += 1
        else:
            seen[key] = tensor.name
            kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)

    nodes, computed = [], {}
    for node in graph.node:
        node.input[:] = [alias.get(n, n) for n in node.input]
        has_subgraph = any(a.HasField("g") or len(a.graphs) for a in node.attribute)
        if node.op_type in _NONDETERMINISTIC or has_subgraph:
            nodes.append(node)
            continue
        key = (node.domain, node.op_type, tuple(node.input), len(node.output),
               tuple(sorted(a.SerializeToString(deterministic=True) for a in node.attribute)))
        earlier = computed.get(key)
        if earlier is None:
            computed[key] = node
            nodes.append(node)
            continue
        for mine, theirs in zip(node.output, earlier.output):
            if mine:
                alias[mine] = theirs
        counts.nodes_shared += 1
        counts.shared_ops[node.op_type] = counts.shared_ops.get(node.op_type, 0) + 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    for sub in (a.g for node in graph.node for a in node.attribute if a.HasField("g")):
        used |= _graph_names(sub)  # outer values a subgraph reads
    for value in list(graph.value_info):
        if value.name in alias:
            graph.value_info.remove(value)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return alias


def _combine(graph: onnx.GraphProto, outputs: list[list[str]], combine: Combine, names: list[str]) -> None:
    """Nodes that combine outputs[k][i] (member i's k-th output) into the graph output names[k]."""
    types = {v.name: v.type.tensor_type for v in graph.value_info}
    for name, inputs in zip(names, outputs):
        elem_type = types[inputs[0]].elem_type
        if combine.kind == "mean":
            graph.node.append(helper.make_node("Mean", inputs, [name], name=f"combine/{name}"))
        elif combine.kind == "weighted":
            scaled = []
            np_type = helper.tensor_dtype_to_np_dtype(elem_type)
            for i, (value, weight) in enumerate(zip(inputs, combine.weights)):
                w = f"combine/{name}/w{i}"
                graph.initializer.append(numpy_helper.from_array(np.array(weight, dtype=np_type), w))
                graph.node.append(helper.make_node("Mul", [value, w], [f"{w}/out"], name=f"{w}/mul"))
                scaled.append(f"{w}/out")
            graph.node.append(helper.make_node("Sum", scaled, [name], name=f"combine/{name}"))
        elif combine.kind == "vote":
            dims = types[inputs[0]].shape.dim
            classes = dims[-1].dim_value if len(dims) else 0
            if classes < 2:
                raise TvmcompressError(f"combine vote needs class scores (last dim >= 2) but output '{name}' has "
                                       "shape " + str([d.dim_value for d in dims]) + ": use mean")
            index = f"combine/{name}/classes"
            graph.initializer.append(numpy_helper.from_array(np.arange(classes, dtype=np.int64), index))
            ballots = []
            for i, value in enumerate(inputs):
                v = f"combine/{name}/m{i}"
                graph.node.extend([
                    helper.make_node("ArgMax", [value], [f"{v}/top"], axis=-1, keepdims=1, name=f"{v}/argmax"),
                    helper.make_node("Equal", [f"{v}/top", index], [f"{v}/hit"], name=f"{v}/equal"),
                    helper.make_node("Cast", [f"{v}/hit"], [f"{v}/ballot"], to=TensorProto.FLOAT, name=f"{v}/cast"),
                ])
                ballots.append(f"{v}/ballot")
            graph.node.append(helper.make_node("Sum", ballots, [name], name=f"combine/{name}"))
            elem_type = TensorProto.FLOAT
        elif combine.kind == "concat":
            graph.node.append(helper.make_node("Concat", inputs, [name], axis=-1, name=f"combine/{name}"))
        else:  # stack
            axis = f"combine/{name}/axis"
            graph.initializer.append(numpy_helper.from_array(np.array([0], dtype=np.int64), axis))
            expanded = []
            for i, value in enumerate(inputs):
                graph.node.append(helper.make_node("Unsqueeze", [value, axis], [f"{axis}/m{i}"],
                                                   name=f"{axis}/unsqueeze{i}"))
                expanded.append(f"{axis}/m{i}")
            graph.node.append(helper.make_node("Concat", expanded, [name], axis=0, name=f"combine/{name}"))
        # Declared by dtype only: shape inference below gives it its shape.
        graph.output.append(helper.make_tensor_value_info(name, elem_type, None))


def merge_models(members: Sequence[onnx.ModelProto], combine: Combine, labels: Sequence[str] | None = None,
                 input_map: Mapping[int, Mapping[str, str]] | None = None) -> onnx.ModelProto:
    """One ONNX model running every member on the shared inputs, outputs combined by `combine` (module docstring).

    labels: how errors name the members (file names); input_map: member index -> {their input: shared name}.
    """
    labels = list(labels) if labels is not None else [f"member {i + 1}" for i in range(len(members))]
    members = [_rename_inputs(m, (input_map or {}).get(i, {}), labels[i]) if (input_map or {}).get(i) else m
               for i, m in enumerate(members)]
    check_members(members, labels)
    _check_outputs(members, labels, combine)
    members = _common_opsets(members, labels)
    shared_inputs = {name for name, _, _ in _signature(members[0].graph)}
    output_names = [o.name for o in members[0].graph.output]

    graph = helper.make_graph([], "merged", [v for v in members[0].graph.input if v.name in shared_inputs], [])
    member_outputs: list[list[str]] = [[] for _ in output_names]
    for i, model in enumerate(members):
        sub = _prefixed(model, i, shared_inputs)
        graph.node.extend(sub.node)
        graph.initializer.extend(sub.initializer)
        graph.value_info.extend(sub.value_info)
        for k, out in enumerate(sub.output):
            member_outputs[k].append(out.name)
            graph.value_info.append(out)
    counts = _Counts()
    alias = _deduplicate(graph, counts)
    # A member output whose node was dropped (two members computing the same thing) reads the kept node's.
    member_outputs = [[alias.get(name, name) for name in outs] for outs in member_outputs]
    _combine(graph, member_outputs, combine, output_names)

    opsets = {}
    for model in members:
        for entry in model.opset_import:
            domain = "" if entry.domain == "ai.onnx" else entry.domain
            opsets[domain] = max(opsets.get(domain, 0), entry.version)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    merged.ir_version = max(min(m.ir_version for m in members), 8)
    merged.producer_name = "tvmcompress merge"
    record = {"members": labels, "combine": combine.kind, "weights": list(combine.weights),
              "initializers_shared": counts.initializers_shared, "nodes_shared": counts.nodes_shared,
              "shared_ops": dict(sorted(counts.shared_ops.items()))}
    merged.metadata_props.add(key=METADATA_KEY, value=json.dumps(record, sort_keys=True))
    try:
        merged = onnx.shape_inference.infer_shapes(merged, strict_mode=True)
        onnx.checker.check_model(merged)
    except Exception as err:  # noqa: BLE001 - checker and inference raise several types
        raise TvmcompressError(f"the merged graph is not valid ONNX ({str(err).splitlines()[0][:200]}): the "
                               f"members' outputs cannot be combined with {combine.kind}") from None
    return merged


def merge_record(model: onnx.ModelProto) -> dict[str, Any] | None:
    """What merge_models recorded in `model`'s metadata, or None for a model that is no merge."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


# ---------------------------------------------------------------------------------------------- accuracy


def ensemble_accuracy(members: Sequence[onnx.ModelProto], merged: onnx.ModelProto, labels: Sequence[str],
                      data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Top-1 accuracy (percent, ONNX Runtime) of each member and of the merged model on `data` (an .npz of the
    inputs, stacked on axis 0, and 'label'), from the first output's argmax."""
    from .data import LABEL_KEY, iterate_batches, validate_inputs
    from .frontend import TensorSpec

    if LABEL_KEY not in data:
        raise TvmcompressError(f"eval data has no '{LABEL_KEY}' array: accuracy needs the true classes")
    data = dict(data)
    truth = np.asarray(data.pop(LABEL_KEY)).reshape(-1)
    specs = [TensorSpec(n, tuple(d if isinstance(d, int) else 1 for d in dims),
                        helper.tensor_dtype_to_np_dtype(t).name) for n, t, dims in _signature(merged.graph)]
    validate_inputs(data, specs, source="eval data")
    calls = list(iterate_batches(data, specs))

    def top1(model) -> float:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        first = session.get_outputs()[0].name
        runs = [session.run([first], call)[0] for call in calls]
        scores = np.concatenate([r.reshape(-1, r.shape[-1]) for r in runs])
        if len(scores) != len(truth):
            raise TvmcompressError(f"eval data has {len(truth)} labels for {len(scores)} predictions")
        return round(100.0 * float(np.mean(scores.argmax(-1) == truth)), 2)

    return {"members": {label: top1(m) for label, m in zip(labels, members)}, "ensemble": top1(merged),
            "samples": int(len(truth))}


def load_members(paths: Sequence[str | os.PathLike]) -> list[onnx.ModelProto]:
    from .frontend import load_model

    return [load_model(p) for p in paths]


# ----------------------------------------------------------------------------------------------- files (CLI)


def parse_input_map(specs: Sequence[str], members: int) -> dict[int, dict[str, str]]:
    """['2:data=input', ...] (MEMBER is the 1-based position on the command line) -> {1: {'data': 'input'}}."""
    result: dict[int, dict[str, str]] = {}
    for spec in specs:
        member, _, rename = spec.partition(":")
        theirs, _, ours = rename.partition("=")
        if not member.isdigit() or not theirs or not ours:
            raise TvmcompressError(f"--input-map '{spec}': write MEMBER:THEIRS=OURS, e.g. 2:data=input (MEMBER is "
                                   "the model's position, from 1)")
        if not 1 <= int(member) <= members:
            raise TvmcompressError(f"--input-map '{spec}': member {member} does not exist (1..{members})")
        result.setdefault(int(member) - 1, {})[theirs] = ours
    return result


def merge_files(paths: Sequence[str], combine: str, input_map: Sequence[str] = ()) -> onnx.ModelProto:
    """merge_models over model files, errors naming the files; `combine` and `input_map` as the CLI writes them."""
    members = load_members(paths)
    return merge_models(members, Combine.parse(combine, len(members)), [os.fspath(p) for p in paths],
                        parse_input_map(input_map, len(members)))


def write_model(model: onnx.ModelProto, path: str, inputs: Sequence[str]) -> None:
    """Write `model` to `path` atomically; never over one of the `inputs`."""
    import tempfile

    target = os.path.realpath(path)
    if any(os.path.exists(p) and os.path.samefile(p, target) for p in inputs if os.path.exists(target)):
        raise TvmcompressError(f"-o {path} is one of the models being merged: write the merge to another file")
    if os.path.isdir(path):
        raise TvmcompressError(f"-o {path} is a directory: give a file name such as {os.path.join(path, 'merged.onnx')}")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise TvmcompressError(f"cannot write {path}: its directory is missing or not writable")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
