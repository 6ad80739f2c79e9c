"""The standard ONNX `Attention` (opsets 23, 24 and 25), which TVM 0.27 routes to its converter for
onnxruntime's com.microsoft `Attention`, a different op.

The converter follows onnx's reference (`onnx/reference/ops/op_attention.py`) step by step, so that the same
numbers come out: Q and K are each scaled by sqrt(scale) before their matmul; softcap comes before the mask;
an additive bias gathers the mask, causal and sliding-window constraints and the non-pad lengths; a query row
whose bias is all -inf gets zero probabilities (not NaN). Shapes are static, so the index grids are constants.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import TvmcompressError
from .relax_helpers import const, dtype_of, shape_of

R = relax.op


class Attention(OnnxOpConverter):
    first_opset = 23  # below 23 an `Attention` node can only be com.microsoft's, which TVM converts

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        return _attention(bb, inputs, attr)


def _attention(bb, inputs, attr):
    q, k, v = inputs[0], inputs[1], inputs[2]
    mask = inputs[3] if len(inputs) > 3 else None
    past_key = inputs[4] if len(inputs) > 4 else None
    past_value = inputs[5] if len(inputs) > 5 else None
    nonpad = inputs[6] if len(inputs) > 6 else None
    is_causal = bool(attr.get("is_causal", 0))
    mode = int(attr.get("qk_matmul_output_mode", 0))
    softcap = float(attr.get("softcap", 0.0))
    left, right = int(attr.get("left_window_size", -1)), int(attr.get("right_window_size", -1))
    softmax_precision = attr.get("softmax_precision")
    out_dtype = dtype_of(q)
    rank3 = len(shape_of(q)) == 3
    if out_dtype == "bfloat16":
        # Neither way matches onnx's op-by-op bfloat16 reference within 1e-3 (one bfloat16 ulp is ~4e-3), and
        # TVM's CPU kernels cannot compute in bfloat16 directly.
        raise TvmcompressError("Attention on bfloat16 tensors is not supported: cast Q, K and V to float16 or float32")
    if out_dtype == "float16":
        # float16 is computed in float32 and rounded once at the end: TVM's fused kernels round at other points
        # than onnx's step-by-step reference, and float16 rounding differences exceed the 1e-3 tolerance.
        q, k, v = (R.astype(t, "float32") for t in (q, k, v))
        past_key = R.astype(past_key, "float32") if past_key is not None else None
        past_value = R.astype(past_value, "float32") if past_value is not None else None
        if mask is not None and dtype_of(mask) == "float16":
            mask = R.astype(mask, "float32")
        q, k, v = bb.normalize(q), bb.normalize(k), bb.normalize(v)
        past_key = bb.normalize(past_key) if past_key is not None else None
        past_value = bb.normalize(past_value) if past_value is not None else None
        mask = bb.normalize(mask) if mask is not None else None
    dtype = dtype_of(q)

    if rank3:
        q = _split_heads(bb, q, int(attr["q_num_heads"]))
        k = _split_heads(bb, k, int(attr["kv_num_heads"]))
        v = _split_heads(bb, v, int(attr["kv_num_heads"]))
    batch, q_heads, q_len, head_size = shape_of(q)
    scale = attr.get("scale")
    scale = 1.0 / math.sqrt(head_size) if scale is None else float(scale)
    scale_sqrt = const(np.sqrt(scale), dtype)  # as the reference: sqrt computed in float64, cast to T1

    past_len = 0
    if past_key is not None:
        past_len = shape_of(past_key)[2]
        k = bb.normalize(R.concat([past_key, k], axis=2))
        v = bb.normalize(R.concat([past_value, v], axis=2))
    present_key, present_value = k, v
    kv_len = shape_of(k)[2]
    kv_heads = shape_of(k)[1]

    bias = _bias(bb, mask, dtype, q_len, kv_len, batch, is_causal, left, right, past_len, nonpad,
                 past_key is not None)

    if q_heads != kv_heads and q_heads % kv_heads == 0:
        k = R.repeat(k, q_heads // kv_heads, axis=1)
        v = R.repeat(v, q_heads // kv_heads, axis=1)

    scores = R.matmul(R.multiply(q, scale_sqrt), R.permute_dims(R.multiply(k, scale_sqrt), [0, 1, 3, 2]))
    if softcap > 0:
        cap = const(softcap, dtype)
        scores = R.multiply(R.tanh(R.divide(scores, cap)), cap)
    scores = bb.normalize(scores)
    qk_output = scores  # modes 0 and 1: after softcap (the reference reassigns it), before the bias
    with_bias = scores if bias is None else bb.normalize(R.add(scores, bias))
    if mode == 2:
        qk_output = with_bias

    logits = with_bias
    if softmax_precision is not None:
        from onnx.helper import tensor_dtype_to_np_dtype

        logits = R.astype(logits, np.dtype(tensor_dtype_to_np_dtype(int(softmax_precision))).name)
    probs = R.nn.softmax(logits, axis=-1)
    if bias is not None:
        # A query row with no attendable key: zero probabilities, decided on the bias as the reference does.
        # `<= lowest finite` rather than `== -inf`: LLVM's fast-math flags let it assume no infinities.
        all_masked = R.less_equal(R.max(bias, axis=-1, keepdims=True), const(np.finfo(dtype).min, dtype))
        probs = R.where(all_masked, const(0, dtype_of(bb.normalize(probs))), probs)
    probs = bb.normalize(R.astype(probs, dtype))
    if mode == 3:
        qk_output = probs

    out = R.matmul(probs, v)
    if rank3:
        out = R.reshape(bb.normalize(R.permute_dims(out, [0, 2, 1, 3])), [batch, q_len, -1])
    outputs = [bb.normalize(out), present_key, present_value, qk_output]
    if out_dtype != dtype:
        outputs = [bb.normalize(R.astype(o, out_dtype)) for o in outputs]
    return relax.Tuple(outputs)


def _split_heads(bb, x, heads: int):
    batch, seq, hidden = shape_of(x)
    return bb.normalize(R.permute_dims(R.reshape(x, [batch, seq, heads, hidden // heads]), [0, 2, 1, 3]))


def _bias(bb, mask, dtype, q_len, kv_len, batch, is_causal, left, right, past_len, nonpad, has_past):
    """The additive bias of the reference (None when there is nothing to add): 0 where a key is attended."""
    neg_inf = const(-np.inf, dtype)
    zero = const(0, dtype)
    if mask is not None:
        mask_shape = shape_of(mask)
        is_bool = dtype_of(mask) == "bool"
        pad = kv_len - mask_shape[-1]
        if pad > 0:  # a mask shorter than the keys: the extra keys are masked
            filler = np.full(mask_shape[:-1] + (pad,), False if is_bool else -np.inf,
                             dtype="bool" if is_bool else dtype_of(mask))
            mask = R.concat([mask, const(filler, filler.dtype.name)], axis=-1)
        mask = R.where(mask, zero, neg_inf) if is_bool else R.astype(mask, dtype)
        mask = bb.normalize(mask)

    # Per-batch query offset for the causal and window constraints: the external cache (nonpad_kv_seqlen
    # without past_key) aligns each batch's queries to its own length; otherwise the offset is the past length.
    per_batch = nonpad is not None and not has_past
    i = np.arange(q_len).reshape(q_len, 1)
    j = np.arange(kv_len).reshape(1, kv_len)

    def allowed_to_bias(allowed):
        return R.where(allowed, zero, neg_inf)

    bias = mask
    if is_causal:
        base = mask if mask is not None else const(np.zeros((q_len, kv_len)), dtype)
        if per_batch:
            offset = R.reshape(R.subtract(R.astype(nonpad, "int64"), const(q_len, "int64")), [batch, 1, 1])
            allowed = R.less_equal(const(j, "int64"), R.add(const(i, "int64"), offset))
            causal = R.reshape(allowed_to_bias(allowed), [batch, 1, q_len, kv_len])
        else:
            causal = const(np.where(j <= i + past_len, 0, -np.inf), dtype)
        bias = bb.normalize(R.add(base, causal))
    if left >= 0 or right >= 0:
        base = R.add(const(np.zeros((q_len, kv_len)), dtype), bias) if bias is not None else \
            const(np.zeros((q_len, kv_len)), dtype)
        if per_batch:
            offset = R.reshape(R.subtract(R.astype(nonpad, "int64"), const(q_len, "int64")), [batch, 1, 1])
            diff = R.subtract(R.add(const(i, "int64"), offset), const(j, "int64"))
            allowed = const(np.ones((1, q_len, kv_len)), "bool")
            if left >= 0:
                allowed = R.logical_and(allowed, R.less_equal(diff, const(left, "int64")))
            if right >= 0:
                allowed = R.logical_and(allowed, R.less_equal(R.negative(diff), const(right, "int64")))
            window = R.reshape(allowed_to_bias(allowed), [batch, 1, q_len, kv_len])
        else:
            diff = i + past_len - j
            allowed = np.ones_like(diff, dtype=bool)
            if left >= 0:
                allowed &= diff <= left
            if right >= 0:
                allowed &= -diff <= right
            window = const(np.where(allowed, 0, -np.inf), dtype)
        bias = bb.normalize(R.add(base, window))
    if nonpad is not None:
        keep = R.less(const(np.arange(kv_len).reshape(1, kv_len), "int64"),
                      R.reshape(R.astype(nonpad, "int64"), [batch, 1]))
        padding = R.reshape(allowed_to_bias(keep), [batch, 1, 1, kv_len])
        bias = padding if bias is None else R.add(bias, padding)
        bias = bb.normalize(bias)
    return bias
