"""RotaryEmbedding (opset 23), which TVM 0.27 lacks, following onnx's reference step by step: rotate the first
rotary_embedding_dim channels of each head by the cached cos/sin (gathered by position_ids when given), in
halves or interleaved pairs."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import shape_of

R = relax.op


class RotaryEmbedding(OnnxOpConverter):
    first_opset = 23

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        position_ids = inputs[3] if len(inputs) > 3 else None
        interleaved = int(attr.get("interleaved", 0))
        num_heads = int(attr.get("num_heads", 0))
        original = shape_of(x)
        if len(original) == 4:  # [batch, heads, seq, head] -> [batch, seq, heads, head]
            x = bb.normalize(R.permute_dims(x, [0, 2, 1, 3]))
        else:
            batch, seq, hidden = original
            x = bb.normalize(R.reshape(x, [batch, seq, num_heads, hidden // num_heads]))
        batch, seq, heads, head = shape_of(x)
        dim = int(attr.get("rotary_embedding_dim", 0)) or head
        half = dim // 2
        if position_ids is not None:
            cos = R.take(cos, position_ids, axis=0)
            sin = R.take(sin, position_ids, axis=0)
        cos = bb.normalize(R.expand_dims(cos, 2))  # [batch, seq, 1, half]
        sin = bb.normalize(R.expand_dims(sin, 2))

        def channels(begin, end, step=1):
            return bb.normalize(R.strided_slice(x, axes=[3], begin=[begin], end=[end], strides=[step]))

        if interleaved:
            x1, x2 = channels(0, dim, 2), channels(1, dim, 2)
        else:
            x1, x2 = channels(0, half), channels(half, dim)
        real = R.subtract(R.multiply(cos, x1), R.multiply(sin, x2))
        imag = R.add(R.multiply(sin, x1), R.multiply(cos, x2))
        if interleaved:
            pairs = R.concat([R.expand_dims(real, -1), R.expand_dims(imag, -1)], axis=-1)
            rotated = R.reshape(bb.normalize(pairs), [batch, seq, heads, dim])
        else:
            rotated = R.concat([real, imag], axis=-1)
        parts = [bb.normalize(rotated)] + ([channels(dim, head)] if dim < head else [])
        out = bb.normalize(R.concat(parts, axis=-1) if len(parts) > 1 else parts[0])
        if len(original) == 4:
            return R.permute_dims(out, [0, 2, 1, 3])
        return R.reshape(out, list(original))
