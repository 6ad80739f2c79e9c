"""LSTM over a symbolic sequence length (dynamic shapes, e.g. a CRNN's width): one TIR loop instead of unrolling.

recurrent.py unrolls the steps, which needs a static length. With a symbolic one, each direction becomes one
`call_tir` of `lstm_steps`: a serial loop over the steps that adds the recurrent matmul to the precomputed input
projection (all steps at once, as in recurrent.py) and applies the gates. Its second output is the final (h, c).
Supported form: default activations (sigmoid, tanh, tanh), no peepholes, no clip, no sequence_lens; others are
refused by `dynamic_form_problem`.
"""

from __future__ import annotations

from tvm import relax
from tvm.script import tirx as T

R = relax.op


def dynamic_form_problem(attr: dict, inputs) -> str | None:
    """Why this LSTM cannot run over a symbolic length, or None."""
    get = lambda i: inputs[i] if len(inputs) > i else None  # noqa: E731
    if attr.get("activations"):
        return "custom activations"
    if attr.get("clip") is not None:
        return "clip"
    if get(4) is not None:
        return "sequence_lens"
    if get(7) is not None:
        return "peepholes"
    return None


def _lstm_steps(batch: int, hidden: int, reverse: bool, dtype: str):
    gates = 4 * hidden
    b_, h_, g_ = T.int64(batch), T.int64(hidden), T.int64(gates)
    rev = T.int64(1 if reverse else 0)  # step t of the loop reads position t, or seq - 1 - t when reversed

    # NOTE: ONNX's gate order is i, o, f, c. The state buffer holds h (row 0) and c (row 1); y[t] is h after step t.
    @T.prim_func(private=True, check_well_formed=False)
    def lstm_steps(var_proj: T.handle, r_t: T.Buffer((h_, g_), dtype), h0: T.Buffer((b_, h_), dtype),
                   c0: T.Buffer((b_, h_), dtype), var_y: T.handle, state: T.Buffer((T.int64(2), b_, h_), dtype)):
        T.func_attr({"tir.noalias": True})
        seq = T.int64()
        proj = T.match_buffer(var_proj, (seq, b_, g_), dtype)
        y = T.match_buffer(var_y, (seq, b_, h_), dtype)
        g = T.alloc_buffer((b_, g_), dtype)
        for b, j in T.grid(b_, h_):
            state[T.int64(0), b, j] = h0[b, j]
            state[T.int64(1), b, j] = c0[b, j]
        for step in T.serial(seq):
            t = step + rev * (seq - T.int64(1) - step - step)
            for b, j in T.grid(b_, g_):
                g[b, j] = proj[t, b, j]
                for k in T.serial(h_):
                    g[b, j] = g[b, j] + state[T.int64(0), b, k] * r_t[k, j]
            for b, j in T.grid(b_, h_):
                c_new = (T.sigmoid(g[b, j + h_ + h_]) * state[T.int64(1), b, j]
                         + T.sigmoid(g[b, j]) * T.tanh(g[b, j + h_ + h_ + h_]))
                state[T.int64(1), b, j] = c_new
                y[t, b, j] = T.sigmoid(g[b, j + h_]) * T.tanh(c_new)
            for b, j in T.grid(b_, h_):
                state[T.int64(0), b, j] = y[t, b, j]

    return lstm_steps


def lstm_direction(bb, proj, r_t, h, c, seq_len, batch: int, hidden: int, reverse: bool, dtype: str):
    """(y [seq, batch, hidden], last h, last c) of one direction; `proj` = x W^T + Wb + Rb, [seq, batch, 4H]."""
    func = _lstm_steps(batch, hidden, reverse, dtype)
    gvar = bb.add_func(func, "lstm_steps_reverse" if reverse else "lstm_steps")
    out = bb.emit(relax.call_tir(gvar, [proj, r_t, h, c], [
        relax.TensorType((seq_len, batch, hidden), dtype), relax.TensorType((2, batch, hidden), dtype)]))
    y = bb.emit(relax.TupleGetItem(out, 0))
    state = bb.emit(relax.TupleGetItem(out, 1))
    last_h = bb.normalize(R.squeeze(R.strided_slice(state, axes=[0], begin=[0], end=[1]), axis=[0]))
    last_c = bb.normalize(R.squeeze(R.strided_slice(state, axes=[0], begin=[1], end=[2]), axis=[0]))
    return y, last_h, last_c
