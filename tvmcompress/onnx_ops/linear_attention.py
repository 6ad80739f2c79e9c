"""LinearAttention (opset 27), which TVM 0.27 lacks: the recurrence of onnx's spec, unrolled over the (static)
sequence length, in float32 like onnx's reference, for the four update rules:

    linear       S_t = S_{t-1} + k_t v_t^T
    gated        S_t = exp(g_t) S_{t-1} + k_t v_t^T
    delta        S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T
    gated_delta  the delta rule on exp(g_t) S_{t-1}
    o_t = scale q_t^T S_t, each KV head's state read by q_num_heads / kv_num_heads query heads.

Unrolling costs one small step per token: meant for decode steps and short prefills, as in the node tests.
"""

from __future__ import annotations

import math

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of, shape_of

R = relax.op
_F32 = "float32"


def _heads(bb, x: relax.Expr, heads: int) -> relax.Expr:
    """(B, T, H*D) -> (B, H, T, D) in float32."""
    b, t, hd = shape_of(x)
    x = R.permute_dims(R.reshape(x, (b, t, heads, hd // heads)), [0, 2, 1, 3])
    return bb.normalize(R.astype(x, _F32))


def _step(bb, x: relax.Expr, t: int) -> relax.Expr:
    """x[:, :, t, :] of a (B, H, T, D) tensor: (B, H, D)."""
    return bb.normalize(R.squeeze(R.strided_slice(x, axes=[2], begin=[t], end=[t + 1]), axis=[2]))


class LinearAttention(OnnxOpConverter):
    first_opset = 27

    @classmethod
    def unsupported_form(cls, node):
        rule = next((a.s.decode() for a in node.attribute if a.name == "update_rule"), "gated_delta")
        return None if rule in ("linear", "gated", "delta", "gated_delta") else f"LinearAttention(update_rule={rule})"

    @classmethod
    def _impl_v27(cls, bb, inputs, attr, params):
        query, key, value = inputs[0], inputs[1], inputs[2]
        optional = list(inputs[3:]) + [None] * (6 - len(inputs))
        past, decay, beta = optional[0], optional[1], optional[2]
        rule = attr.get("update_rule", b"gated_delta")
        rule = rule.decode() if isinstance(rule, bytes) else rule
        q_heads, kv_heads = int(attr["q_num_heads"]), int(attr["kv_num_heads"])
        b, length, _ = shape_of(query)
        d_k = shape_of(query)[2] // q_heads
        d_v = shape_of(value)[2] // kv_heads
        scale = float(attr.get("scale", 0.0)) or 1.0 / math.sqrt(d_k)
        out_dtype = dtype_of(query)

        q4, k4, v4 = _heads(bb, query, q_heads), _heads(bb, key, kv_heads), _heads(bb, value, kv_heads)
        if decay is not None:  # per head (B, T, H) or per key channel (B, T, H*d_k) -> (B, H, T, 1 or d_k)
            last = shape_of(decay)[2]
            decay4 = _heads(bb, decay, kv_heads) if last != kv_heads else bb.normalize(
                R.astype(R.permute_dims(R.reshape(decay, (b, length, kv_heads, 1)), [0, 2, 1, 3]), _F32))
        if beta is not None:  # (B, T, H or 1) -> (B, H or 1, T, 1)
            last = shape_of(beta)[2]
            beta4 = bb.normalize(R.astype(R.permute_dims(R.reshape(beta, (b, length, last, 1)), [0, 2, 1, 3]), _F32))
        if past is not None:
            state_dtype = dtype_of(past)
            state = bb.normalize(R.astype(past, _F32))
        else:
            state_dtype = out_dtype
            state = bb.normalize(R.zeros((b, kv_heads, d_k, d_v), _F32))
        group = q_heads // kv_heads

        outputs = []
        for t in range(length):
            q_t, k_t, v_t = _step(bb, q4, t), _step(bb, k4, t), _step(bb, v4, t)
            if rule in ("gated", "gated_delta"):
                state = bb.normalize(R.multiply(state, R.expand_dims(R.exp(_step(bb, decay4, t)), -1)))
            if rule in ("delta", "gated_delta"):
                retrieved = R.sum(R.multiply(state, R.expand_dims(k_t, -1)), axis=[2])  # S^T k: (B, H, d_v)
                v_t = bb.normalize(R.multiply(_step(bb, beta4, t), R.subtract(v_t, retrieved)))
            state = bb.normalize(R.add(state, R.multiply(R.expand_dims(k_t, -1), R.expand_dims(v_t, -2))))
            read = state if group == 1 else bb.normalize(R.repeat(state, group, axis=1))
            o_t = R.sum(R.multiply(R.expand_dims(q_t, -1), read), axis=[2])  # q^T S: (B, H_q, d_v)
            outputs.append(bb.normalize(R.expand_dims(R.multiply(o_t, const(scale, _F32)), 2)))

        out = outputs[0] if length == 1 else bb.normalize(R.concat(outputs, axis=2))  # (B, H_q, T, d_v)
        out = R.reshape(R.permute_dims(out, [0, 2, 1, 3]), (b, length, q_heads * d_v))
        return relax.Tuple([bb.normalize(R.astype(out, out_dtype)), bb.normalize(R.astype(state, state_dtype))])
