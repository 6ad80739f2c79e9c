"""Time each kernel (PrimFunc) of a CPU artifact alone: where an artifact's time goes.

    python bench/profile_kernels.py ARTIFACT_DIR [--top 25]

TVM 0.27's Relax VM has no profiler, so this rebuilds what the artifact ran: its saved Relax module
(relax_module.json) through our CPU schedule passes with the manifest's target and options, then compiles each
PrimFunc on its own and times it on random inputs of its call's shapes (best of 7 x 10 runs: the machine is
shared, the minimum is the least disturbed). Per kernel: calls, total ms, and for int8 dot-product kernels the
multiply-accumulates their compute block performs (padding included). The sum is not the artifact's latency
(no VM overhead, warm caches), but the split between kernels is what bench_int8.py uses to bound int8's speedup.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprVisitor, visitor

from tvmcompress.schedules.cpu_pipeline import cpu_lowering_passes, cpu_schedule_passes
from tvmcompress.schedules.int8_conv import INT8_CONV2D
from tvmcompress.schedules.int8_rules import BLOCK_NAME as INT8_DENSE
from tvmcompress.schedules.cpu_rules.packed_compute import SCHEDULE_KEY

RELAX_MODULE = "relax_module.json"


@dataclass
class KernelTime:
    name: str
    calls: int
    ms: float  # all calls
    int8_dot_macs: int  # all calls; 0 when the kernel has no int8 dot-product block


def _int8_dot_macs(func: tirx.PrimFunc) -> int:
    """Iteration count of the PrimFunc's int8 dot-product block (unscheduled), or 0."""
    found: list[int] = []

    def visit(block):
        if str(block.annotations.get(SCHEDULE_KEY, "")) in (INT8_DENSE, INT8_CONV2D):
            found.append(math.prod(int(iv.dom.extent) for iv in block.iter_vars))

    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, visit)], order="post")
    return found[0] if found else 0


def _calls(main: relax.Function) -> list[tuple[str, list, list]]:
    calls = []
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @visitor
    class Calls(PyExprVisitor):
        def visit_call_(self, call):
            if call.op.same_as(call_tir):
                out = call.ty
                outs = list(out.fields) if isinstance(out, relax.TupleType) else [out]
                calls.append((call.args[0].name_hint, [a.ty for a in call.args[1].fields], outs))
            super().visit_call_(call)

    Calls().visit_expr(main)
    return calls


def profile(artifact: str | pathlib.Path) -> list[KernelTime]:
    """Per-kernel times of the CPU artifact at `artifact`, most expensive first."""
    artifact = pathlib.Path(artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    target = tvm.target.Target(manifest["target"]["json"])
    if target.kind.name != "llvm":
        raise SystemExit(f"{artifact}: profile_kernels.py times CPU artifacts; this one targets {target.kind.name}")
    options = next((p.get("options") or {} for p in manifest["passes"] if p["name"] == "tvmcompress.cpu_pipeline"), {})
    mod = tvm.ir.load_json((artifact / RELAX_MODULE).read_text())
    winograd = options.get("winograd", True)
    passes = cpu_schedule_passes(target, None, winograd)
    lowering = cpu_lowering_passes(target, winograd)  # the head of `passes`; what follows schedules
    with target:
        lowered = tvm.transform.Sequential(lowering)(mod)
        # NOTE: counted before scheduling, which may update the module's PrimFuncs in place.
        macs_of = {gv.name_hint: _int8_dot_macs(f) for gv, f in lowered.functions_items()
                   if isinstance(f, tirx.PrimFunc)}
        scheduled = tvm.transform.Sequential(passes[len(lowering):])(lowered)
    rng = np.random.default_rng(0)
    dev = tvm.cpu()

    def tensor(ty):
        shape, dtype = [int(d) for d in ty.shape], str(ty.dtype)
        data = rng.standard_normal(shape) if dtype.startswith("float") else rng.integers(0, 60, shape)
        return tvm.runtime.tensor(data.astype(dtype), dev)

    compiled, totals = {}, defaultdict(lambda: [0, 0.0, 0])
    for name, args, outs in _calls(scheduled["main"]):
        if name not in compiled:
            func = scheduled[name].with_attr("global_symbol", "main")
            compiled[name] = (tvm.compile(tvm.IRModule({"main": func}), target).jit(), macs_of[name])
        lib, macs = compiled[name]
        timer = lib.time_evaluator("main", dev, number=10, repeat=7)
        ms = min(timer(*[tensor(t) for t in args + outs]).results) * 1e3
        entry = totals[name]
        entry[0] += 1
        entry[1] += ms
        entry[2] += macs
    return sorted((KernelTime(n, c, ms, m) for n, (c, ms, m) in totals.items()), key=lambda k: -k.ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    kernels = profile(args.artifact)
    total = sum(k.ms for k in kernels)
    print(f"{total:.3f} ms in {sum(k.calls for k in kernels)} calls of {len(kernels)} kernels")
    for k in kernels[: args.top]:
        macs = f"  {k.int8_dot_macs / 1e6:.1f} M int8 MACs" if k.int8_dot_macs else ""
        print(f"{k.ms:8.3f} ms  x{k.calls:<3d} {k.name}{macs}")


if __name__ == "__main__":
    sys.exit(main())
