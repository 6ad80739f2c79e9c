"""Run a compiled model library on this machine, the way its target allows: natively, under qemu-user, or on a GPU.

Each runner takes the library path and the inputs in the model's order, and returns the outputs in order. The
runner kind comes from the artifact's manifest (`target.runner`), so an artifact runs the same way wherever it
is loaded.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tvmcompress.errors import TvmcompressError

from . import cpu_features


def _outputs_to_numpy(result) -> list[np.ndarray]:
    """The VM returns one tensor or a (nested) tuple of them; flatten to a list in order."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    arrays: list[np.ndarray] = []
    for item in result:
        arrays.extend(_outputs_to_numpy(item))
    return arrays


def run_native(library: str, inputs: Sequence[np.ndarray], requires: Sequence[str] = ()) -> list[np.ndarray]:
    missing = sorted(set(requires) - cpu_features.detect().flags)
    if missing:
        raise TvmcompressError(
            f"this machine lacks {', '.join(missing)}, which the artifact's target needs: run it on such a CPU, "
            "or compile for --target host"
        )
    return _run_vm(library, inputs, device="cpu")


def run_gpu(library: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import tvm

    if not tvm.cuda(0).exist:
        raise TvmcompressError(
            "this artifact is built for CUDA and this machine has no usable CUDA GPU (or TVM lacks the CUDA "
            "runtime): run it on a machine with an NVIDIA GPU and a CUDA-enabled TVM runtime"
        )
    return _run_vm(library, inputs, device="cuda")


def _run_vm(library: str, inputs: Sequence[np.ndarray], device: str) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    dev = tvm.cpu(0) if device == "cpu" else tvm.cuda(0)
    lib = tvm.runtime.load_module(library)
    vm = relax.VirtualMachine(lib, dev)
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
    return _outputs_to_numpy(vm["main"](*tensors))


def run_library(
    runner: str, arch: str, library: str, inputs: Sequence[np.ndarray], requires: Sequence[str] = ()
) -> list[np.ndarray]:
    """Dispatch on the manifest's runner kind."""
    if runner == "native":
        return run_native(library, inputs, requires)
    if runner == "gpu":
        return run_gpu(library, inputs)
    if runner in ("qemu-aarch64", "qemu-arm"):
        from . import qemu

        reason = qemu.qemu_available(arch)
        if reason is not None:
            raise TvmcompressError(reason)
        return qemu.run_under_qemu(arch, library, list(inputs))
    if runner == "link-check":
        raise TvmcompressError(
            f"no TVM runtime for {arch} exists on this machine, so its artifacts are link-checked only: "
            f"copy the artifact to a {arch} device to run it"
        )
    raise TvmcompressError(f"unknown runner '{runner}' in the manifest: recompile the artifact with this tvmcompress")
