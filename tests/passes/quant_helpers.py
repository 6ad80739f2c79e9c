"""Helpers shared by the quantization pass tests: build and run a Relax module on this machine's CPU."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def run(mod: tvm.IRModule, *inputs: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, host_target()), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs))
    return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]


def fake_quant(x: np.ndarray, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    return ((np.clip(np.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale).astype(np.float32)
