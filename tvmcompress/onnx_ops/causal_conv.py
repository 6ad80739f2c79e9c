"""CausalConvWithState (opset 27), which TVM 0.27 lacks: a causal depthwise 1-D convolution over
[past_state, input] (k - 1 zeros without past_state), with an optional fused SiLU, and the last k - 1 positions
as present_state.

The k taps are k shifted slices times the kernel's column (k is small: 2..4 in the models that use it); the sum
runs in float32 and is rounded to the input type before the activation, as onnx's reference does.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import dtype_of, shape_of

R = relax.op


class CausalConvWithState(OnnxOpConverter):
    first_opset = 27

    @classmethod
    def unsupported_form(cls, node):
        activation = next((a.s.decode() for a in node.attribute if a.name == "activation"), "none")
        return None if activation in ("none", "silu", "swish") else f"CausalConvWithState(activation={activation})"

    @classmethod
    def _impl_v27(cls, bb, inputs, attr, params):
        x, weight = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        past = inputs[3] if len(inputs) > 3 else None
        batch, channels, length = shape_of(x)
        k = shape_of(weight)[2]
        dtype = dtype_of(x)
        if past is None:
            past = relax.const(np.zeros((batch, channels, k - 1), dtype=dtype), dtype)
        padded = bb.normalize(R.concat([past, x], axis=2) if k > 1 else x)
        taps = bb.normalize(R.astype(R.reshape(weight, (channels, k)), "float32"))
        padded32 = bb.normalize(R.astype(padded, "float32"))
        total = None
        for j in range(k):
            window = R.strided_slice(padded32, axes=[2], begin=[j], end=[j + length])
            column = R.reshape(R.strided_slice(taps, axes=[1], begin=[j], end=[j + 1]), (1, channels, 1))
            term = bb.normalize(R.multiply(window, column))
            total = term if total is None else bb.normalize(R.add(total, term))
        if bias is not None:
            total = R.add(total, R.reshape(R.astype(bias, "float32"), (1, channels, 1)))
        out = bb.normalize(R.astype(total, dtype))
        activation = attr.get("activation", b"none")
        activation = activation.decode() if isinstance(activation, bytes) else activation
        if activation in ("silu", "swish"):
            out32 = bb.normalize(R.astype(out, "float32"))
            out = bb.normalize(R.astype(R.multiply(out32, R.sigmoid(out32)), dtype))
        # The last k - 1 positions (none for k = 1: a slice, since a zero-size constant cannot be serialized).
        total_length = length + k - 1
        present = R.strided_slice(padded, axes=[2], begin=[total_length - (k - 1)], end=[total_length])
        return relax.Tuple([out, bb.normalize(present)])
