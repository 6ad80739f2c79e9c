"""LSTM, GRU and RNN, which TVM 0.27's importer lacks: unrolled over the (static) sequence length.

The input projection of all time steps is one matmul; each step then adds the recurrent matmul and applies the
gates. Forms we do not convert are named by `unsupported_form` and rejected at import: LSTM's `input_forget`,
unknown activation functions, and `sequence_lens` with a reverse or bidirectional direction.
"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import const, dtype_of, shape_of

R = relax.op

_ALPHA_BETA = {  # activation -> (default alpha, default beta); None: takes no such parameter
    "Relu": (None, None), "Tanh": (None, None), "Sigmoid": (None, None), "Softsign": (None, None),
    "Softplus": (None, None), "Affine": (1.0, 0.0), "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None),
    "ScaledTanh": (1.0, 1.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, None),
}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _unsupported_form(node: onnx.NodeProto) -> str | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "LSTM" and attrs.get("input_forget", 0):
        return "LSTM(input_forget=1)"
    for name in attrs.get("activations", []):
        name = name.decode() if isinstance(name, bytes) else name
        if name not in _ALPHA_BETA:
            return f"{node.op_type}(activations={name})"
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if len(node.input) > 4 and node.input[4] and direction != "forward":
        return f"{node.op_type}(sequence_lens, direction={direction})"
    return None


class _Recurrent(OnnxOpConverter):
    op = ""

    @classmethod
    def unsupported_form(cls, node):
        return _unsupported_form(node)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _convert(cls.op, bb, inputs, attr)


class LSTM(_Recurrent):
    op = "LSTM"


class GRU(_Recurrent):
    op = "GRU"


class RNN(_Recurrent):
    op = "RNN"


def _activation(name: str, alpha, beta, dtype: str):
    def apply(x):
        a = const(alpha, dtype) if alpha is not None else None
        b = const(beta, dtype) if beta is not None else None
        if name == "Relu":
            return R.nn.relu(x)
        if name == "Tanh":
            return R.tanh(x)
        if name == "Sigmoid":
            return R.sigmoid(x)
        if name == "Softsign":
            return R.divide(x, R.add(R.abs(x), const(1, dtype)))
        if name == "Softplus":
            return R.log(R.add(R.exp(x), const(1, dtype)))
        if name == "Affine":
            return R.add(R.multiply(a, x), b)
        if name == "LeakyRelu":
            return R.where(R.greater_equal(x, const(0, dtype)), x, R.multiply(a, x))
        if name == "ThresholdedRelu":
            return R.where(R.greater(x, a), x, const(0, dtype))
        if name == "ScaledTanh":
            return R.multiply(a, R.tanh(R.multiply(b, x)))
        if name == "HardSigmoid":
            return R.clip(R.add(R.multiply(a, x), b), 0, 1)
        if name == "Elu":
            return R.where(R.greater_equal(x, const(0, dtype)), x,
                           R.multiply(a, R.subtract(R.exp(x), const(1, dtype))))
        raise AssertionError(name)  # unsupported_form rejected the others

    return apply


def _activations(op: str, attr: dict, num_directions: int, dtype: str) -> list[list]:
    names = [n.decode() if isinstance(n, bytes) else n for n in attr.get("activations", ())]
    per_direction = len(_DEFAULT_ACTIVATIONS[op])
    if not names:
        names = _DEFAULT_ACTIVATIONS[op] * num_directions
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    functions = []
    for name in names:
        # The alpha and beta lists are consumed in the order of the activations that take them.
        default_alpha, default_beta = _ALPHA_BETA[name]
        alpha = (alphas.pop(0) if alphas else default_alpha) if default_alpha is not None else None
        beta = (betas.pop(0) if betas else default_beta) if default_beta is not None else None
        functions.append(_activation(name, alpha, beta, dtype))
    return [functions[d * per_direction:(d + 1) * per_direction] for d in range(num_directions)]


def _take(bb, x, index: int, axis: int = 0):
    """x[index] along `axis` (that axis removed)."""
    sliced = R.strided_slice(x, axes=[axis], begin=[index], end=[index + 1])
    return bb.normalize(R.squeeze(sliced, axis=[axis]))


def _stack(values, axis: int):
    # Not R.stack: ConvertLayout in the CPU pipeline fails on it (TVM 0.27, "Index -1 out of bounds").
    return R.concat([R.expand_dims(v, axis) for v in values], axis=axis)


def _columns(x, start: int, size: int):
    return R.strided_slice(x, axes=[-1], begin=[start], end=[start + size])


def _convert(op, bb, inputs, attr):
    x, w, r = inputs[0], inputs[1], inputs[2]
    get = lambda i: inputs[i] if len(inputs) > i else None  # noqa: E731
    b, seq_lens, init_h = get(3), get(4), get(5)
    init_c, peep = (get(6), get(7)) if op == "LSTM" else (None, None)
    layout = int(attr.get("layout", 0))
    direction = attr.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    num_directions = 2 if direction == "bidirectional" else 1
    hidden = int(attr["hidden_size"]) if "hidden_size" in attr else shape_of(r)[-1]
    clip = attr.get("clip")
    linear_before_reset = int(attr.get("linear_before_reset", 0))
    dtype = dtype_of(x)
    gates = _GATES[op]

    if layout == 1:  # [batch, seq, ...] -> [seq, batch, ...]
        x = R.permute_dims(x, [1, 0, 2])
        init_h = R.permute_dims(init_h, [1, 0, 2]) if init_h is not None else None
        init_c = R.permute_dims(init_c, [1, 0, 2]) if init_c is not None else None
    x = bb.normalize(x)
    symbolic_seq = getattr(x.ty, "shape", None) is not None and not isinstance(x.ty.shape.values[0], tvm.tirx.IntImm)
    if symbolic_seq:
        # Dynamic shapes: the length is only known at run time (recurrent_loop.py loops instead of unrolling).
        from .recurrent_loop import dynamic_form_problem

        problem = dynamic_form_problem(attr, inputs) if op == "LSTM" else f"{op}"
        if problem is not None:
            raise TvmcompressError(f"{op} with a dynamic sequence length does not support {problem} yet: fix the "
                                   "sequence dim with --input-shape")
        seq_len = x.ty.shape.values[0]
        _, batch, _ = (int(v) if i else v for i, v in enumerate(x.ty.shape.values))
    else:
        seq_len, batch, _ = shape_of(x)
    activations = _activations(op, attr, num_directions, dtype)
    zeros = const(np.zeros((batch, hidden)), dtype)

    step_mask = None
    if seq_lens is not None:  # forward only (unsupported_form): steps past a sequence's end keep its state
        lens = R.reshape(R.astype(seq_lens, "int64"), [batch, 1])
        step_mask = lambda t: R.less(relax.const(np.int64(t)), lens)  # noqa: E731

    def clipped(v):
        return R.clip(v, -float(clip), float(clip)) if clip is not None else v

    ys, last_h, last_c = [], [], []
    for d in range(num_directions):
        reverse = direction == "reverse" or d == 1
        f = activations[d]
        w_d, r_d = _take(bb, w, d), _take(bb, r, d)
        r_t = bb.normalize(R.permute_dims(r_d, [1, 0]))
        # Input projection of every step at once: [seq, batch, gates * hidden].
        proj = R.matmul(x, R.permute_dims(w_d, [1, 0]))
        wb = rb = None
        if b is not None:
            b_d = _take(bb, b, d)
            wb = bb.normalize(_columns(b_d, 0, gates * hidden))
            rb = bb.normalize(_columns(b_d, gates * hidden, gates * hidden))
            if op != "GRU":  # GRU keeps Rbh apart for linear_before_reset
                proj = R.add(proj, R.add(wb, rb))
            else:
                proj = R.add(proj, wb)
        proj = bb.normalize(proj)
        h = _take(bb, init_h, d) if init_h is not None else zeros
        c = (_take(bb, init_c, d) if init_c is not None else zeros) if op == "LSTM" else None
        p_d = _take(bb, peep, d) if peep is not None else None
        if symbolic_seq:
            from .recurrent_loop import lstm_direction

            y_d, h, c = lstm_direction(bb, proj, r_t, bb.normalize(h), bb.normalize(c), seq_len, batch, hidden,
                                       reverse, dtype)
            ys.append(y_d)
            last_h.append(h)
            last_c.append(c)
            continue
        outputs = [None] * seq_len
        for t in (range(seq_len - 1, -1, -1) if reverse else range(seq_len)):
            xt = _take(bb, proj, t)
            if op == "LSTM":
                g = bb.normalize(R.add(xt, R.matmul(h, r_t)))
                i_, o_, f_, c_ = (_columns(g, k * hidden, hidden) for k in range(4))
                if p_d is not None:
                    i_ = R.add(i_, R.multiply(_columns(p_d, 0, hidden), c))
                    f_ = R.add(f_, R.multiply(_columns(p_d, 2 * hidden, hidden), c))
                i_, f_, c_ = f[0](clipped(i_)), f[0](clipped(f_)), f[1](clipped(c_))
                c_new = bb.normalize(R.add(R.multiply(f_, c), R.multiply(i_, c_)))
                if p_d is not None:
                    o_ = R.add(o_, R.multiply(_columns(p_d, hidden, hidden), c_new))
                o_ = f[0](clipped(o_))
                h_new = R.multiply(o_, f[2](c_new))
            elif op == "GRU":
                rh = bb.normalize(R.matmul(h, r_t))
                z_ = _columns(xt, 0, hidden)
                r_ = _columns(xt, hidden, hidden)
                hx = _columns(xt, 2 * hidden, hidden)
                rz, rr, rhh = (_columns(rh, k * hidden, hidden) for k in range(3))
                if rb is not None:
                    rz = R.add(rz, _columns(rb, 0, hidden))
                    rr = R.add(rr, _columns(rb, hidden, hidden))
                z_ = f[0](clipped(R.add(z_, rz)))
                r_ = f[0](clipped(R.add(r_, rr)))
                if linear_before_reset:
                    rec = rhh if rb is None else R.add(rhh, _columns(rb, 2 * hidden, hidden))
                    ht = R.add(hx, R.multiply(r_, rec))
                else:
                    rh_t = R.permute_dims(R.strided_slice(r_d, axes=[0], begin=[2 * hidden], end=[3 * hidden]), [1, 0])
                    rh_reset = R.matmul(R.multiply(r_, h), rh_t)
                    ht = R.add(hx, rh_reset)
                    if rb is not None:
                        ht = R.add(ht, _columns(rb, 2 * hidden, hidden))
                ht = f[1](clipped(ht))
                one = const(1, dtype)
                h_new = R.add(R.multiply(R.subtract(one, z_), ht), R.multiply(z_, h))
                c_new = None
            else:
                h_new = f[0](clipped(R.add(xt, R.matmul(h, r_t))))
                c_new = None
            h_new = bb.normalize(h_new)
            if step_mask is not None:
                keep = bb.normalize(step_mask(t))
                outputs[t] = bb.normalize(R.where(keep, h_new, zeros))
                h = bb.normalize(R.where(keep, h_new, h))
                if c_new is not None:
                    c = bb.normalize(R.where(keep, c_new, c))
            else:
                outputs[t] = h_new
                h = h_new
                c = c_new if c_new is not None else c
        ys.append(bb.normalize(_stack(outputs, axis=0)))  # [seq, batch, hidden]
        last_h.append(h)
        last_c.append(c)

    y = _stack(ys, axis=1)  # [seq, num_directions, batch, hidden]
    y_h = _stack(last_h, axis=0)  # [num_directions, batch, hidden]
    results = [y, y_h]
    if op == "LSTM":
        results.append(_stack(last_c, axis=0))
    if layout == 1:
        results[0] = R.permute_dims(results[0], [2, 0, 1, 3])
        results[1:] = [R.permute_dims(v, [1, 0, 2]) for v in results[1:]]
    return relax.Tuple([bb.normalize(v) for v in results])
