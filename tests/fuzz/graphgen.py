"""A generator of random valid ONNX graphs for differential testing against ONNX Runtime.

`generate(seed)` builds a small DAG: one or two float32 inputs, then a random sequence of ops drawn from
conv / conv-transpose / matmul / gemm / elementwise / reduce / reshape / transpose / concat / split / pool /
resize / softmax / pad / slice / batchnorm, with random shapes, layouts (rank 2, 3 and 4 tensors, every axis)
and attributes. Each op reads tensors already in the graph, so every graph is a DAG; every tensor that no op
reads becomes a graph output, so nothing a bug can touch goes unobserved. We track shapes ourselves (to pick
valid attributes), and `check(model)` then confirms each graph with onnx.checker, strict shape inference and
a run in ONNX Runtime, so a generator bug cannot pass as a compiler bug.

Values stay in ranges where float32 results are well conditioned: no Log/Sqrt/Div of values near zero, Exp
only after a squashing op, and weights scaled by 1/sqrt(fan_in).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSETS = (13, 17)


class _Builder:
    def __init__(self, rng: np.random.Generator, opset: int):
        self.rng = rng
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # every value the graph computes, with its shape
        self.readers: dict[str, int] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._n = 0

    # --- plumbing -------------------------------------------------------------------------------------------
    def const(self, array: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, fan_in: int) -> str:
        w = self.rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), size=shape).astype(np.float32)
        return self.const(w)

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def add_input(self, shape) -> str:
        name = f"in{len(self.inputs)}"
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.shapes[name] = tuple(shape)
        self.readers[name] = 0
        return name

    def emit(self, op_type: str, inputs, out_shapes, **attrs) -> list[str]:
        outs = []
        for shape in out_shapes:
            self._n += 1
            name = f"v{self._n}_{op_type.lower()}"
            self.shapes[name] = tuple(int(d) for d in shape)
            self.readers[name] = 0
            outs.append(name)
        for i in inputs:
            if i in self.readers:
                self.readers[i] += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def pick(self, rank=None, min_size=1) -> str | None:
        """A computed value (recent ones more likely), optionally of a given rank / each spatial dim >= min_size."""
        names = [n for n, s in self.shapes.items() if (rank is None or len(s) in np.atleast_1d(rank))
                 and all(d >= min_size for d in s[2:] if len(s) == 4) and int(np.prod(s)) <= 4096]
        if not names:
            return None
        weights = np.arange(1, len(names) + 1, dtype=np.float64) ** 2
        return names[self.rng.choice(len(names), p=weights / weights.sum())]

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]


# --- op generators: each takes the builder, returns True when it added a node ---------------------------------
def _conv(b: _Builder) -> bool:
    x = b.pick(rank=4, min_size=2)
    if x is None:
        return False
    n, c, h, w = b.shapes[x]
    k = b.choice([1, 3, 3, 3, 5]) if min(h, w) >= 5 else b.choice([1, 2, 3])
    stride = b.choice([1, 1, 1, 2])
    dilation = b.choice([1, 1, 1, 2])
    pad = b.choice([0, k // 2, k // 2, 1])
    eff = dilation * (k - 1) + 1
    if h + 2 * pad < eff or w + 2 * pad < eff:
        return False
    group = b.choice([1, 1, 1, c]) if c > 1 else 1
    oc = c * b.choice([1, 2]) if group == c and c > 1 else int(b.rng.integers(1, 9))
    oh, ow = (h + 2 * pad - eff) // stride + 1, (w + 2 * pad - eff) // stride + 1
    inputs = [x, b.weight((oc, c // group, k, k), c // group * k * k)]
    if b.rng.random() < 0.7:
        inputs.append(b.weight((oc,), 4))
    b.emit("Conv", inputs, [(n, oc, oh, ow)], kernel_shape=[k, k], strides=[stride, stride],
           dilations=[dilation, dilation], pads=[pad] * 4, group=group)
    return True


def _conv_transpose(b: _Builder) -> bool:
    x = b.pick(rank=4)
    if x is None:
        return False
    n, c, h, w = b.shapes[x]
    k, stride = b.choice([(2, 2), (3, 2), (4, 2), (3, 1), (1, 1)])
    pad = b.choice([0, (k - 1) // 2])
    out_pad = b.choice([0, 1]) if stride > 1 else 0
    oc = int(b.rng.integers(1, 7))
    oh, ow = ((d - 1) * stride - 2 * pad + k + out_pad for d in (h, w))
    if min(oh, ow) < 1 or oh * ow * oc > 4096:
        return False
    inputs = [x, b.weight((c, oc, k, k), c * k * k)]
    if b.rng.random() < 0.5:
        inputs.append(b.weight((oc,), 4))
    b.emit("ConvTranspose", inputs, [(n, oc, oh, ow)], kernel_shape=[k, k], strides=[stride, stride],
           pads=[pad] * 4, output_padding=[out_pad, out_pad])
    return True


def _matmul(b: _Builder) -> bool:
    x = b.pick(rank=[2, 3, 4])
    if x is None:
        return False
    shape = b.shapes[x]
    k, m = shape[-1], int(b.rng.integers(1, 17))
    if b.rng.random() < 0.7:
        b.emit("MatMul", [x, b.weight((k, m), k)], [shape[:-1] + (m,)])
    else:  # a batched matmul of two activations: x @ transpose(x) over the last two axes
        perm = list(range(len(shape)))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        (xt,) = b.emit("Transpose", [x], [tuple(shape[p] for p in perm)], perm=perm)
        b.emit("MatMul", [x, xt], [shape[:-1] + (shape[-2],)])
    return True


def _gemm(b: _Builder) -> bool:
    x = b.pick(rank=2)
    if x is None:
        return False
    m, k = b.shapes[x]
    n = int(b.rng.integers(1, 17))
    trans_b = int(b.rng.integers(2))
    w = b.weight((n, k) if trans_b else (k, n), k)
    inputs = [x, w]
    if b.rng.random() < 0.7:
        inputs.append(b.weight(b.choice([(n,), (1, n), (m, n)]), 4))
    alpha, beta = float(b.choice([1.0, 0.5])), float(b.choice([1.0, 2.0]))
    b.emit("Gemm", inputs, [(m, n)], transB=trans_b, alpha=alpha, beta=beta)
    return True


_UNARY = {
    "Relu": {}, "Sigmoid": {}, "Tanh": {}, "Abs": {}, "Neg": {}, "Erf": {}, "Softsign": {},
    "LeakyRelu": {"alpha": 0.1}, "Elu": {"alpha": 1.0}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Floor": {}, "Ceil": {}, "Round": {}, "Sin": {}, "Cos": {},
}


def _unary(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    op = b.choice(sorted(_UNARY) + ["HardSwish", "Clip", "Exp", "SqrtAbs", "Selu"])
    shape = b.shapes[x]
    if op == "Clip":
        b.emit("Clip", [x, b.const(np.float32(-0.5)), b.const(np.float32(b.choice([0.5, 6.0])))], [shape])
    elif op == "Exp":  # bounded argument: exp(tanh(x))
        (t,) = b.emit("Tanh", [x], [shape])
        b.emit("Exp", [t], [shape])
    elif op == "SqrtAbs":  # sqrt(|x| + 1): positive argument, well conditioned
        (a,) = b.emit("Abs", [x], [shape])
        (p,) = b.emit("Add", [a, b.const(np.float32(1.0))], [shape])
        b.emit("Sqrt", [p], [shape])
    elif op == "HardSwish" and b.opset < 14:  # HardSwish is opset 14: the x * hard_sigmoid(x) exporters write
        (hs,) = b.emit("HardSigmoid", [x], [shape], alpha=1.0 / 6, beta=0.5)
        b.emit("Mul", [x, hs], [shape])
    elif op in ("HardSwish", "Selu"):
        b.emit(op, [x], [shape])
    elif op in ("Floor", "Ceil", "Round"):
        # Only on a graph input: on a computed value, a last-bit difference at an integer boundary (legal
        # reassociation) would move the result by 1. Scaled so values span several integers.
        x = b.choice([i.name for i in b.inputs])
        shape = b.shapes[x]
        (s,) = b.emit("Mul", [x, b.const(np.float32(3.1))], [shape])
        b.emit(op, [s], [shape])
    else:
        b.emit(op, [x], [shape], **_UNARY[op])
    return True


def _broadcast_shape(b: _Builder, shape) -> tuple[int, ...]:
    """A shape that broadcasts to `shape`: some dims set to 1, maybe fewer leading dims."""
    out = [d if b.rng.random() < 0.5 else 1 for d in shape]
    drop = int(b.rng.integers(0, len(shape) + 1)) if b.rng.random() < 0.4 else 0
    return tuple(out[drop:])


def _binary(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    op = b.choice(["Add", "Sub", "Mul", "Max", "Min", "Div", "Pow"])
    same = [n for n, s in b.shapes.items() if s == shape and n != x]
    if op in ("Div", "Pow") or not same or b.rng.random() < 0.5:
        cshape = _broadcast_shape(b, shape)
        if op == "Div":  # divisor away from zero
            c = (b.rng.uniform(0.5, 2.0, cshape) * b.rng.choice([-1, 1], cshape)).astype(np.float32)
        elif op == "Pow":  # |x| ** small integer exponent: exact in both runtimes up to rounding
            (x,) = b.emit("Abs", [x], [shape])
            c = np.float32(b.choice([2.0, 3.0]))
            cshape = ()
        else:
            c = b.rng.normal(0.0, 1.0, cshape).astype(np.float32)
        other = b.const(np.asarray(c, dtype=np.float32))
        inputs = [x, other] if b.rng.random() < 0.7 or op in ("Div", "Pow") else [other, x]
    else:
        inputs = [x, b.choice(same)]
    b.emit(op, inputs, [shape])
    return True


def _reduce(b: _Builder) -> bool:
    x = b.pick(rank=[2, 3, 4])
    if x is None:
        return False
    shape = b.shapes[x]
    op = b.choice(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare"])
    rank = len(shape)
    axes = sorted(int(a) for a in b.rng.choice(rank, size=int(b.rng.integers(1, rank)), replace=False))
    if b.rng.random() < 0.3:
        axes = [a - rank for a in axes]  # negative axes
    keep = int(b.rng.integers(2))
    norm = [a % rank for a in axes]
    out = tuple((1 if i in norm else d) for i, d in enumerate(shape) if keep or i not in norm)
    if op == "ReduceSum" or b.opset >= 18:
        b.emit(op, [x, b.ints(axes)], [out], keepdims=keep)
    else:
        b.emit(op, [x], [out], axes=axes, keepdims=keep)
    return True


def _factor_shape(b: _Builder, total: int) -> list[int]:
    dims = []
    rest = total
    for _ in range(int(b.rng.integers(1, 4))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = b.choice(divisors)
        dims.append(d)
        rest //= d
    dims.append(rest)
    return dims


def _reshape(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    total = int(np.prod(shape))
    if b.rng.random() < 0.3 and len(shape) >= 2:
        axis = int(b.rng.integers(0, len(shape) + 1))
        out = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        b.emit("Flatten", [x], [out], axis=axis)
        return True
    out = _factor_shape(b, total)
    spec = list(out)
    if b.rng.random() < 0.4:
        spec[int(b.rng.integers(len(spec)))] = -1
    if b.rng.random() < 0.3 and len(spec) <= len(shape) and spec[0] == shape[0] and -1 not in spec[:1]:
        spec[0] = 0  # "copy this dim from the input"
    b.emit("Reshape", [x, b.ints(spec)], [tuple(out)])
    return True


def _transpose(b: _Builder) -> bool:
    x = b.pick(rank=[2, 3, 4])
    if x is None:
        return False
    shape = b.shapes[x]
    perm = [int(p) for p in b.rng.permutation(len(shape))]
    b.emit("Transpose", [x], [tuple(shape[p] for p in perm)], perm=perm)
    return True


def _concat(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    axis = int(b.rng.integers(len(shape)))
    others = [n for n, s in b.shapes.items()
              if len(s) == len(shape) and n != x and all(s[i] == shape[i] for i in range(len(s)) if i != axis)]
    parts = [x]
    if others and b.rng.random() < 0.7:
        parts.append(b.choice(others))
    else:
        cshape = list(shape)
        cshape[axis] = int(b.rng.integers(1, 4))
        parts.append(b.const(b.rng.normal(0, 1, cshape).astype(np.float32)))
    if b.rng.random() < 0.3:
        parts.append(x)
    out = list(shape)
    out[axis] = sum((b.shapes[p][axis] if p in b.shapes else cshape[axis]) for p in parts)
    neg = b.rng.random() < 0.3
    b.emit("Concat", parts, [tuple(out)], axis=axis - len(shape) if neg else axis)
    return True


def _split(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    axes = [i for i, d in enumerate(shape) if d >= 2]
    if not axes:
        return False
    axis = b.choice(axes)
    d = shape[axis]
    cut = int(b.rng.integers(1, d))
    sizes = [cut, d - cut]
    outs = []
    for s in sizes:
        o = list(shape)
        o[axis] = s
        outs.append(tuple(o))
    if d % 2 == 0 and b.rng.random() < 0.4:  # equal halves, no split input
        outs = [tuple(shape[:axis]) + (d // 2,) + tuple(shape[axis + 1:])] * 2
        b.emit("Split", [x], outs, axis=axis)
    else:
        b.emit("Split", [x, b.ints(sizes)], outs, axis=axis)
    return True


def _slice(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    axis = int(b.rng.integers(len(shape)))
    d = shape[axis]
    step = b.choice([1, 1, 2, -1]) if d > 1 else 1
    if step > 0:
        start = int(b.rng.integers(0, d))
        end = int(b.rng.integers(start + 1, d + 1))
        size = len(range(start, end, step))
        end_spec = end if b.rng.random() < 0.7 else 2**31  # "to the end", as exporters write it
        if end != d:
            end_spec = end
    else:
        start, end = d - 1, -d - 1
        size = d
        end_spec = end
    out = list(shape)
    out[axis] = size
    b.emit("Slice", [x, b.ints([start]), b.ints([end_spec]), b.ints([axis]), b.ints([step])], [tuple(out)])
    return True


def _pool(b: _Builder) -> bool:
    x = b.pick(rank=4, min_size=2)
    if x is None:
        return False
    n, c, h, w = b.shapes[x]
    op = b.choice(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
    if op.startswith("Global"):
        b.emit(op, [x], [(n, c, 1, 1)])
        return True
    k = b.choice([2, 3]) if min(h, w) >= 3 else 2
    stride = b.choice([1, 2])
    pad = b.choice([0, 0, k // 2]) if k > 2 else 0
    ceil = int(b.rng.random() < 0.3)
    if ceil:  # ONNX drops a last window that would start in the right padding
        def out_dim(d):
            o = -(-(d + 2 * pad - k) // stride) + 1
            return o - 1 if (o - 1) * stride >= d + pad else o
    else:
        def out_dim(d):
            return (d + 2 * pad - k) // stride + 1
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, ceil_mode=ceil)
    if op == "AveragePool":
        attrs["count_include_pad"] = int(b.rng.integers(2))
    b.emit(op, [x], [(n, c, out_dim(h), out_dim(w))], **attrs)
    return True


def _resize(b: _Builder) -> bool:
    x = b.pick(rank=4)
    if x is None:
        return False
    n, c, h, w = b.shapes[x]
    mode = b.choice(["nearest", "linear"])
    ctm = b.choice(["half_pixel", "asymmetric", "pytorch_half_pixel"] + (["align_corners"] if mode == "linear" else []))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = b.choice(["floor", "round_prefer_floor", "round_prefer_ceil"])
    if b.rng.random() < 0.5:
        scale = float(b.choice([2.0, 2.0, 0.5]))
        oh, ow = int(np.floor(h * scale)), int(np.floor(w * scale))
        if min(oh, ow) < 1:
            return False
        b.emit("Resize", [x, "", b.const(np.array([1, 1, scale, scale], np.float32))], [(n, c, oh, ow)], **attrs)
    else:
        oh, ow = int(b.rng.integers(1, 2 * h + 1)), int(b.rng.integers(1, 2 * w + 1))
        b.emit("Resize", [x, "", "", b.ints([n, c, oh, ow])], [(n, c, oh, ow)], **attrs)
    return True


def _softmax(b: _Builder) -> bool:
    x = b.pick()
    if x is None:
        return False
    shape = b.shapes[x]
    op = b.choice(["Softmax", "Softmax", "LogSoftmax"])
    axis = int(b.rng.integers(-len(shape), len(shape)))
    b.emit(op, [x], [shape], axis=axis)
    return True


def _pad(b: _Builder) -> bool:
    x = b.pick(rank=4)
    if x is None:
        return False
    shape = b.shapes[x]
    mode = b.choice(["constant", "constant", "reflect", "edge"])
    pads = [0, 0] + [int(b.rng.integers(0, 3)) for _ in range(2)] + [0, 0] + [int(b.rng.integers(0, 3)) for _ in range(2)]
    if mode == "reflect" and any(pads[i] >= shape[i] or pads[i + 4] >= shape[i] for i in (2, 3)):
        mode = "constant"
    out = tuple(d + pads[i] + pads[i + 4] for i, d in enumerate(shape))
    inputs = [x, b.ints(pads)]
    if mode == "constant" and b.rng.random() < 0.5:
        inputs.append(b.const(np.float32(b.rng.normal())))
    b.emit("Pad", inputs, [out], mode=mode)
    return True


def _batchnorm(b: _Builder) -> bool:
    x = b.pick(rank=4)
    if x is None:
        return False
    c = b.shapes[x][1]
    scale = b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32))
    bias = b.const(b.rng.normal(0, 0.2, c).astype(np.float32))
    mean = b.const(b.rng.normal(0, 0.2, c).astype(np.float32))
    var = b.const(b.rng.uniform(0.5, 2.0, c).astype(np.float32))
    b.emit("BatchNormalization", [x, scale, bias, mean, var], [b.shapes[x]], epsilon=1e-5)
    return True


OPS = {
    "conv": _conv, "conv_transpose": _conv_transpose, "matmul": _matmul, "gemm": _gemm, "unary": _unary,
    "binary": _binary, "reduce": _reduce, "reshape": _reshape, "transpose": _transpose, "concat": _concat,
    "split": _split, "slice": _slice, "pool": _pool, "resize": _resize, "softmax": _softmax, "pad": _pad,
    "batchnorm": _batchnorm,
}
# Conv-family and elementwise ops are the bulk of real models, and fusion bugs sit between them.
_WEIGHTS = {"conv": 4, "binary": 3, "unary": 3, "concat": 2, "split": 2, "pool": 2, "matmul": 2}


def _input_shape(rng: np.random.Generator) -> tuple[int, ...]:
    rank = int(rng.choice([2, 3, 4, 4, 4]))
    if rank == 4:
        return (1, int(rng.integers(1, 9)), int(rng.integers(3, 13)), int(rng.integers(3, 13)))
    if rank == 3:
        return (1, int(rng.integers(1, 9)), int(rng.integers(1, 17)))
    return (int(rng.integers(1, 5)), int(rng.integers(1, 17)))


def generate(seed: int, n_ops: int | None = None) -> onnx.ModelProto:
    """One random valid graph, fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, int(rng.choice(OPSETS)))
    first = b.add_input(_input_shape(rng))
    if rng.random() < 0.3:  # a second input, same shape or independent
        b.add_input(b.shapes[first] if rng.random() < 0.5 else _input_shape(rng))
    names = sorted(OPS)
    p = np.array([_WEIGHTS.get(n, 1) for n in names], dtype=np.float64)
    target = n_ops if n_ops is not None else int(rng.integers(2, 9))
    added, tries = 0, 0
    while added < target and tries < 50:
        tries += 1
        if OPS[names[rng.choice(len(names), p=p / p.sum())]](b):
            added += 1
    outputs = [n for n, r in b.readers.items() if r == 0 and not n.startswith("in")]
    if not outputs:  # only possible if no op could be added: make the graph non-trivial anyway
        (o,) = b.emit("Relu", [first], [b.shapes[first]])
        outputs = [o]
    graph = helper.make_graph(
        b.nodes, f"fuzz_{seed}", b.inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(b.shapes[o])) for o in outputs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)], ir_version=IR_VERSION)
    model.producer_name = "tvmcompress-fuzz"
    return model


def random_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1_000_003)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Validate a generated graph (checker, strict shape inference against our shapes) and return ORT's outputs."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    declared = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    for vi in list(inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims != declared[vi.name]:
            raise AssertionError(f"generator shape bug: {vi.name} inferred {dims}, declared {declared[vi.name]}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outs = session.run(None, feeds)
    for o, a in zip(model.graph.output, outs):
        if list(a.shape) != declared[o.name]:
            raise AssertionError(f"generator shape bug: ORT gives {o.name} shape {a.shape}, declared {declared[o.name]}")
        if not np.all(np.isfinite(a)):
            raise AssertionError(f"generator range bug: {o.name} has non-finite values")
    return outs
