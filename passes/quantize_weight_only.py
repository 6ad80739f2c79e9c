"""QuantizeWeightOnly: int8, int4, ternary (2-bit) or binary (1-bit) weights, float activations, the weights
dequantized inside the kernel (ternary/binary: codes and per-channel alpha from passes/ternary_weights.py).

For each conv2d (groups = 1, NCHW/OIHW) and matmul (activation x constant [K, N]) matched by `rules`, not
excluded, the float weight is quantized symmetric per output channel (scale_c = max|W_c| / qmax; qmax 127 for
int8, 7 for int4) and the op becomes one `call_tir` of a PrimFunc that reads the stored integers:

    y = op(x, unpack(W_q)) * scale[C]          # unpack: int8 -> float32, or a nibble -> int4 -> float32

int8 weights are stored as an int8 tensor of the weight's shape; int4 weights as two's-complement nibbles, two
per byte, in a flat uint8 tensor (element i of the C-order weight in byte i // 2, low nibble first).
A call_tir with a non-constant activation is never folded by FoldConstant, so the artifact keeps the small
weights (a relax `dequantize` of a constant would be folded back to float32 at build time), and the
dequantization happens in the kernel's inner loop (the unpack is inlined into the reduction).

Pre: weights are bound float32 constants (prepare_for_quantization ran). Post: each quantized op is a call_tir
whose weight argument is an int8 or uint8 constant; signature and output types are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quant_rules import RULES, QuantRule, constant_value, find_quantizable_layers, rebind
from .quantize_weights import quantize_per_channel
from .ternary_weights import binarize, pack_codes, ternarize

__all__ = ["QuantizeWeightOnly", "pack_int4", "unpack_int4"]


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Signed values in [-8, 7], flattened in C order, two per byte (low nibble first), as uint8."""
    flat = (values.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, shape) -> np.ndarray:
    """The inverse of pack_int4."""
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1)[: int(np.prod(shape))].astype(np.int8)
    return np.where(nibbles >= 8, nibbles - 16, nibbles).astype(np.int8).reshape(shape)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.QuantizeWeightOnly")
class QuantizeWeightOnly:
    def __init__(self, bits: int = 8, exclude: Iterable[str] = (), rules: Mapping[str, QuantRule] = RULES):
        if bits not in (1, 2, 4, 8):
            raise ValueError(f"QuantizeWeightOnly supports 8, 4, 2 (ternary) or 1 (binary) bits, got {bits}")
        self.bits = bits
        self.exclude = frozenset(exclude)
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        layers = find_quantizable_layers(mod, self.rules)
        selected = {l.binding for l in layers if l.name not in self.exclude and l.binding not in self.exclude}
        rewriter = _WeightOnlyRewriter(mod, self.bits, selected)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


def supported(call: relax.Call) -> bool:
    """conv2d in NCHW/OIHW with groups 1, or any matmul the rules match."""
    if call.op.name != "relax.nn.conv2d":
        return True
    attrs = call.attrs
    return (int(attrs.groups) == 1 and str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW"
            and str(attrs.out_layout or "NCHW") == "NCHW")


@mutator
class _WeightOnlyRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, bits: int, selected: set[str]):
        super().__init__(mod)
        self.bits = bits
        self.selected = selected

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if binding.var.name not in self.selected or not supported(call):
            return super().visit_var_binding_(binding)
        x = self.visit_expr(call.args[0])
        weight = constant_value(call.args[1])
        is_conv = call.op.name == "relax.nn.conv2d"
        axis = 0 if is_conv else 1
        if self.bits <= 2:  # ternary / binary codes and a per-channel alpha (passes/ternary_weights.py)
            w_q, scale = (ternarize if self.bits == 2 else binarize)(weight, axis)
            stored = pack_codes(w_q, self.bits)
        else:
            w_q, scale = quantize_per_channel(weight, axis, bits=self.bits)
            stored = pack_int4(w_q) if self.bits == 4 else w_q
        x_shape = tuple(int(d) for d in call.args[0].ty.shape)
        kind = {1: "binary", 2: "ternary"}.get(self.bits, f"int{self.bits}")
        name = f"{binding.var.name}_weight_only_{kind}"
        gvar = self.builder_.add_func(_kernel(call, x_shape, weight.shape, stored, self.bits, name), name)
        args = [x, relax.const(stored, str(stored.dtype)), relax.const(scale.astype(np.float32), "float32")]
        out = relax.TensorType([int(d) for d in call.ty.shape], "float32")
        rebind(self, binding.var, relax.call_tir(gvar, args, out))


def _kernel(call: relax.Call, x_shape, w_shape, stored: np.ndarray, bits: int, name: str) -> tvm.tirx.PrimFunc:
    """The PrimFunc y = op(x, unpack(stored)) * scale[C], with the unpack inlined into the op's reduction."""
    x = te.placeholder(x_shape, "float32", name="x")
    wq = te.placeholder(stored.shape, str(stored.dtype), name="w_stored")
    channels = w_shape[0] if call.op.name == "relax.nn.conv2d" else w_shape[1]
    scale = te.placeholder((channels,), "float32", name="scale")
    strides = [int(s) for s in reversed(np.cumprod([1, *reversed(w_shape[1:])]))]

    def unpacked(*index):
        if bits == 8:
            return wq[index].astype("float32")
        flat = sum(i * s for i, s in zip(index, strides))
        if bits <= 2:  # 4 two's-complement 2-bit codes or 8 sign bits per byte, lowest bits first
            per = 8 // bits
            field = (wq[flat // per].astype("int32") >> ((flat % per) * bits)) & ((1 << bits) - 1)
            if bits == 2:
                return tvm.tirx.Select(field >= 2, field - 4, field).astype("float32")
            return (field * 2 - 1).astype("float32")
        byte = wq[flat // 2].astype("int32")
        nibble = (byte >> ((flat % 2) * 4)) & 15
        return tvm.tirx.Select(nibble >= 8, nibble - 16, nibble).astype("float32")

    w = te.compute(w_shape, unpacked, name="w_unpack")
    if call.op.name == "relax.nn.conv2d":
        attrs = call.attrs
        acc = topi.nn.conv2d_nchw(x, w, [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                                  [int(d) for d in attrs.dilation], out_dtype="float32")
        out = te.compute(acc.shape, lambda n, c, h, w_: acc[n, c, h, w_] * scale[c], name="rescale")
    else:
        k = te.reduce_axis((0, w_shape[0]), name="k")
        acc = te.compute(
            (*x_shape[:-1], w_shape[1]), lambda *i: te.sum(x[(*i[:-1], k)] * w[k, i[-1]], axis=k), name="matmul"
        )
        out = te.compute(acc.shape, lambda *i: acc[i] * scale[i[-1]], name="rescale")
    func = te.create_prim_func([x, wq, scale, out], index_dtype_override="int64")  # relax shapes are int64
    schedule = tvm.s_tir.Schedule(func)
    schedule.compute_inline(schedule.get_sblock("w_unpack") if hasattr(schedule, "get_sblock")
                            else schedule.get_block("w_unpack"))
    return schedule.mod["main"].with_attr("global_symbol", name)
