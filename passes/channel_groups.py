"""Channel dependency groups of a Relax `main`: which channels must be removed together.

Every tensor with a channel axis (axis 1 of NCHW tensors, the last axis of matmul operands) gets a channel
*space*. Spaces are merged (union-find) where an op ties channels one to one: elementwise ops (BN after
DecomposeOpsForInference, ReLU, clip, residual add), pooling, depthwise conv (groups == channels). A concat
along the channel axis makes a derived space (its parts side by side), and a flatten/reshape
[N, C, H, W] -> [N, C*H*W] another (channel c is rows c*H*W .. (c+1)*H*W - 1 of the following matmul).

A group (a union-find root) is prunable when its channels are produced only by conv2d / matmul layers with
constant weights (its *sources*), and no op we do not understand reads it: anything else (a function input or
output, a transpose, an unknown op, a broadcast that would change meaning) freezes every group it touches, so
pruning can never change what the remaining channels compute.

Pre: `main` has static shapes, weights are bound constants and binding names are unique (UniqueBindingNames).
Nothing here mutates IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

__all__ = ["ChannelAnalysis", "Layer", "analyze_channels", "kept_indices", "space_size", "space_leaves"]

# Ops whose output has the input's shape and channel meaning.
_UNARY = {
    "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.gelu", "relax.nn.silu",
    "relax.nn.leakyrelu", "relax.nn.gelu_tanh", "relax.negative", "relax.abs", "relax.sqrt", "relax.exp",
    "relax.erf", "relax.nn.softplus",
}
_BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum",
           "relax.power"}
_POOL = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"}

# A space is a leaf id (int, a union-find element), ("cat", (space, ...)) or ("rep", space, factor).
Space = int | tuple


@dataclass
class Layer:
    """A conv2d or matmul with a constant weight. `in_space` / `out_space` are the spaces of its input's and
    output's channel axes; depthwise convs share them."""

    binding: str
    op: str  # "conv2d", "depthwise_conv2d" or "matmul"
    weight: np.ndarray
    in_space: Space | None
    out_space: Space
    input_var: str  # name of the activation input


@dataclass
class ChannelAnalysis:
    parent: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    frozen_leaves: set[int] = field(default_factory=set)
    layers: dict[str, Layer] = field(default_factory=dict)  # binding -> layer, program order
    spaces: dict[str, tuple[Space, int]] = field(default_factory=dict)  # var name -> (space, channel axis)
    consts: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # binding -> [(arg index, axis)]
    reshapes: dict[str, Space] = field(default_factory=dict)  # binding -> output space of a flatten

    # ----- union-find -----
    def new_leaf(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        return len(self.parent) - 1

    def find(self, leaf: int) -> int:
        while self.parent[leaf] != leaf:
            self.parent[leaf] = self.parent[self.parent[leaf]]
            leaf = self.parent[leaf]
        return leaf

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def freeze(self, space: Space | None) -> None:
        for leaf in space_leaves(space):
            self.frozen_leaves.add(leaf)

    # ----- groups -----
    def is_frozen(self, root: int) -> bool:
        return any(self.find(leaf) == root for leaf in self.frozen_leaves)

    def sources(self, root: int) -> list[Layer]:
        """Layers producing the group's channels (conv2d / matmul whose output space is the group)."""
        return [l for l in self.layers.values() if l.op != "depthwise_conv2d" and isinstance(l.out_space, int)
                and self.find(l.out_space) == root]

    def prunable_groups(self) -> list[int]:
        """Roots of groups whose channels may be removed, in order of their first source."""
        roots = []
        for layer in self.layers.values():
            if layer.op == "depthwise_conv2d" or not isinstance(layer.out_space, int):
                continue
            root = self.find(layer.out_space)
            if root not in roots and not self.is_frozen(root):
                roots.append(root)
        return roots

    def consumers(self, root: int) -> list[Layer]:
        """Layers (not depthwise) whose input channels include the group's."""
        return [l for l in self.layers.values() if l.op != "depthwise_conv2d" and l.in_space is not None
                and root in {self.find(leaf) for leaf in space_leaves(l.in_space)}]


def space_leaves(space: Space | None) -> list[int]:
    if space is None:
        return []
    if isinstance(space, int):
        return [space]
    if space[0] == "cat":
        return [leaf for part in space[1] for leaf in space_leaves(part)]
    return space_leaves(space[1])


def space_size(analysis: ChannelAnalysis, space: Space) -> int:
    if isinstance(space, int):
        return analysis.sizes[space]
    if space[0] == "cat":
        return sum(space_size(analysis, part) for part in space[1])
    return space_size(analysis, space[1]) * space[2]


def kept_indices(analysis: ChannelAnalysis, space: Space, kept: dict[int, np.ndarray]) -> np.ndarray:
    """The indices that survive along a space's axis, given kept channels per group root (absent: all)."""
    if isinstance(space, int):
        root = analysis.find(space)
        return kept[root] if root in kept else np.arange(analysis.sizes[space])
    if space[0] == "cat":
        parts, offset = [], 0
        for part in space[1]:
            parts.append(kept_indices(analysis, part, kept) + offset)
            offset += space_size(analysis, part)
        return np.concatenate(parts)
    inner, factor = space[1], space[2]
    return (kept_indices(analysis, inner, kept)[:, None] * factor + np.arange(factor)[None, :]).reshape(-1)


def _shape(expr: relax.Expr) -> tuple[int, ...] | None:
    sinfo = getattr(expr, "ty", None)  # 0.27: struct info is `.ty`, a relax.TensorType
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    try:
        return tuple(int(d) for d in sinfo.shape.values)
    except (TypeError, AttributeError):
        return None


def _const(expr: relax.Expr) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.expr.GenericConst):  # 0.27: Relax constants, value in `.value`
        return expr.value.numpy()
    return None


def _op_name(call: relax.Expr) -> str | None:
    if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op):
        return call.op.name
    return None


class _Analyzer:
    def __init__(self):
        self.a = ChannelAnalysis()

    def space_of(self, expr: relax.Expr) -> tuple[Space, int] | None:
        return self.a.spaces.get(expr.name) if isinstance(expr, relax.Var) else None

    def freeze_args(self, value: relax.Expr) -> None:
        """Freeze every space the expression reads (an op we do not understand)."""
        exprs = list(value.args) if isinstance(value, relax.Call) else []
        if isinstance(value, relax.Tuple):
            exprs = list(value.fields)
        elif isinstance(value, relax.TupleGetItem):
            exprs = [value.tuple_value]
        elif isinstance(value, relax.Var):
            exprs = [value]
        for expr in exprs:
            if isinstance(expr, relax.Tuple):
                self.freeze_args(expr)
            found = self.space_of(expr)
            if found:
                self.a.freeze(found[0])

    def frozen_output(self, name: str, value: relax.Expr) -> None:
        """A new tensor whose channels nothing may remove: a frozen leaf of its own."""
        shape = _shape(value)
        if shape is not None and len(shape) >= 2:
            leaf = self.a.new_leaf(shape[1] if len(shape) == 4 else shape[-1])
            self.a.frozen_leaves.add(leaf)
            self.a.spaces[name] = (leaf, 1 if len(shape) == 4 else len(shape) - 1)

    def visit(self, name: str, value: relax.Expr) -> None:
        op = _op_name(value)
        handled = False
        if op == "relax.nn.conv2d":
            handled = self.conv2d(name, value)
        elif op == "relax.matmul":
            handled = self.matmul(name, value)
        elif op in _UNARY or op in _POOL or op == "relax.mean":
            handled = self.passthrough(name, value, op)
        elif op in _BINARY:
            handled = self.binary(name, value)
        elif op == "relax.concat":
            handled = self.concat(name, value)
        elif op in ("relax.reshape", "relax.flatten"):
            handled = self.flatten(name, value)
        elif isinstance(value, relax.Var) and self.space_of(value):
            self.a.spaces[name] = self.space_of(value)
            handled = True
        if not handled:
            self.freeze_args(value)
            self.frozen_output(name, value)

    def conv2d(self, name: str, call: relax.Call) -> bool:
        attrs = call.attrs
        weight = _const(call.args[1])
        found = self.space_of(call.args[0])
        if (weight is None or weight.ndim != 4 or str(attrs.data_layout) != "NCHW"
                or str(attrs.kernel_layout) != "OIHW" or str(attrs.out_layout) not in ("NCHW", "")
                or found is None or found[1] != 1):
            return False
        in_space = found[0]
        groups, channels_in = int(attrs.groups), space_size(self.a, in_space)
        if groups == 1:
            out = self.a.new_leaf(weight.shape[0])
            self.a.layers[name] = Layer(name, "conv2d", weight, in_space, out, call.args[0].name)
        elif groups == channels_in == weight.shape[0] and weight.shape[1] == 1:
            out = in_space
            self.a.layers[name] = Layer(name, "depthwise_conv2d", weight, in_space, out, call.args[0].name)
        else:
            return False
        self.a.spaces[name] = (out, 1)
        return True

    def matmul(self, name: str, call: relax.Call) -> bool:
        weight = _const(call.args[1])
        found = self.space_of(call.args[0])
        if weight is None or weight.ndim != 2 or found is None or found[1] != len(_shape(call.args[0])) - 1:
            return False
        out = self.a.new_leaf(weight.shape[1])
        self.a.layers[name] = Layer(name, "matmul", weight, found[0], out, call.args[0].name)
        self.a.spaces[name] = (out, len(_shape(call)) - 1)
        return True

    def passthrough(self, name: str, call: relax.Call, op: str) -> bool:
        found = self.space_of(call.args[0])
        in_shape, out_shape = _shape(call.args[0]), _shape(call)
        if found is None or in_shape is None or out_shape is None:
            return False
        space, axis = found
        if op in _POOL:
            if str(call.attrs.layout) != "NCHW" or str(call.attrs.out_layout) not in ("NCHW", "") or axis != 1:
                return False
        elif op == "relax.mean":
            reduced = {int(a) % len(in_shape) for a in (call.attrs.axis or range(len(in_shape)))}
            if axis in reduced or (not call.attrs.keepdims and any(r < axis for r in reduced)):
                return False
        elif in_shape != out_shape:
            return False
        self.a.spaces[name] = (space, axis)
        return True

    def binary(self, name: str, call: relax.Call) -> bool:
        out_shape = _shape(call)
        lhs, rhs = (self.space_of(arg) for arg in call.args)
        if out_shape is None or (lhs is None and rhs is None):
            return False
        if lhs is not None and rhs is not None:
            if lhs[1] != rhs[1] or _shape(call.args[0]) != out_shape or _shape(call.args[1]) != out_shape:
                return False
            if lhs[0] != rhs[0]:
                if not (isinstance(lhs[0], int) and isinstance(rhs[0], int)):
                    return False  # derived spaces tie only when they are the same expression
                if self.a.sizes[lhs[0]] != self.a.sizes[rhs[0]]:
                    return False
                self.a.union(lhs[0], rhs[0])
            self.a.spaces[name] = lhs
            return True
        index = 0 if lhs is not None else 1
        space, axis = lhs if lhs is not None else rhs
        other = call.args[1 - index]
        if _shape(call.args[index]) != out_shape:
            return False  # the constant broadcasts the tensor: pruning would change what it adds
        value = _const(other)
        if value is None:
            if isinstance(other, relax.Var) and _shape(other) is not None and len(_shape(other)) == 0:
                self.a.spaces[name] = (space, axis)  # a scalar variable
                return True
            return False
        position = axis - (len(out_shape) - value.ndim)  # the constant's axis aligned with the channel axis
        if position >= 0 and value.shape[position] != 1:
            self.a.consts.setdefault(name, []).append((1 - index, position))
        self.a.spaces[name] = (space, axis)
        return True

    def concat(self, name: str, call: relax.Call) -> bool:
        fields = call.args[0]
        if not isinstance(fields, relax.Tuple):
            return False
        found = [self.space_of(f) for f in fields.fields]
        out_shape = _shape(call)
        if any(f is None for f in found) or out_shape is None:
            return False
        axis = int(call.attrs.axis) % len(out_shape)
        if any(f[1] != axis for f in found):
            return False
        self.a.spaces[name] = (("cat", tuple(f[0] for f in found)), axis)
        return True

    def flatten(self, name: str, call: relax.Call) -> bool:
        found = self.space_of(call.args[0])
        in_shape, out_shape = _shape(call.args[0]), _shape(call)
        if found is None or in_shape is None or out_shape is None:
            return False
        space, axis = found
        if in_shape == out_shape:
            self.a.spaces[name] = found
            return True
        # [N, C, H, W] -> [N, C*H*W]: channel c owns a contiguous run of H*W features.
        if len(in_shape) == 4 and axis == 1 and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
            factor = in_shape[2] * in_shape[3]
            space = space if factor == 1 else ("rep", space, factor)
            self.a.spaces[name] = (space, 1)
            self.a.reshapes[name] = space
            return True
        return False


def analyze_channels(mod: tvm.IRModule) -> ChannelAnalysis:
    """Channel spaces, layers and groups of `mod["main"]` (see the module docstring)."""
    func = mod["main"]
    analyzer = _Analyzer()
    for param in func.params:
        analyzer.frozen_output(param.name, param)
    for block in func.body.blocks:
        for binding in block.bindings:
            analyzer.visit(binding.var.name, binding.value)
    analyzer.freeze_args(func.body.body)  # the function's outputs keep every channel
    return analyzer.a


def channel_positions(analysis: ChannelAnalysis, space: Space, root: int) -> np.ndarray | None:
    """[C, f] indices along a space's axis where each channel of group `root` lands (f > 1 after a flatten), or
    None when the group is not part of the space exactly once."""
    if isinstance(space, int):
        return np.arange(analysis.sizes[space])[:, None] if analysis.find(space) == root else None
    if space[0] == "cat":
        found, offset = [], 0
        for part in space[1]:
            positions = channel_positions(analysis, part, root)
            if positions is not None:
                found.append(positions + offset)
            offset += space_size(analysis, part)
        return found[0] if len(found) == 1 else None
    positions = channel_positions(analysis, space[1], root)
    if positions is None:
        return None
    factor = space[2]
    return (positions[:, :, None] * factor + np.arange(factor)).reshape(positions.shape[0], -1)
