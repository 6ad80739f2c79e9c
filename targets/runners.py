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


class Session:
    """A model library loaded once and called many times: `session(inputs) -> outputs`, both lists in model order."""

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_many(self, samples: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
        """Several calls; runners with a per-call start-up cost (qemu) override this to pay it once."""
        return [self(inputs) for inputs in samples]


class VMSession(Session):
    """The Relax VM of a library loaded in this process (native CPU or CUDA)."""

    def __init__(self, library: str, device: str, threads: int = 0):
        import tvm
        from tvm import relax

        from tvmcompress.threads import use_threads

        self.device = tvm.cpu(0) if device == "cpu" else tvm.cuda(0)
        # The artifact's num-cores (0: the whole pool). NOTE: TVM's pool is per calling thread; this sizes the
        # pool of the thread that opens the session, the one that calls it in our CLI, API and benchmarks.
        self.threads = use_threads(threads) if device == "cpu" else 0
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(library), self.device)
        self.main = self.vm["main"]

    def to_device(self, inputs: Sequence[np.ndarray]) -> list:
        import tvm

        # np.require, not np.ascontiguousarray: that one turns a rank-0 array into shape (1,).
        return [tvm.runtime.tensor(np.require(a, requirements="C"), self.device) for a in inputs]

    def call_device(self, tensors: list):
        """One call on inputs already on the device (what benchmarks time)."""
        return self.main(*tensors)

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return _outputs_to_numpy(self.call_device(self.to_device(inputs)))
        except IndexError as err:
            raise_if_index_error(err)
            raise


def raise_if_index_error(err: Exception) -> None:
    """A TvmcompressError for the kernel's index check (tvmcompress/onnx_ops/indexing.py): the inputs are wrong,
    not the library."""
    from tvmcompress.onnx_ops.indexing import INDEX_ERROR_PREFIX

    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if message.startswith(INDEX_ERROR_PREFIX):
        raise TvmcompressError(f"{message}: pass indices inside that range") from None


class QemuSession(Session):
    def __init__(self, arch: str, library: str):
        from . import qemu

        reason = qemu.qemu_available(arch)
        if reason is not None:
            raise TvmcompressError(reason)
        self.qemu, self.arch, self.library = qemu, arch, library

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.qemu.run_under_qemu(self.arch, self.library, list(inputs))

    def run_many(self, samples: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
        # One qemu process for the lot; chunked so that the command line stays well under ARG_MAX.
        results: list[list[np.ndarray]] = []
        for start in range(0, len(samples), self.CHUNK):
            chunk = [list(s) for s in samples[start : start + self.CHUNK]]
            results.extend(self.qemu.run_many_under_qemu(self.arch, self.library, chunk))
        return results

    CHUNK = 512


def _check_host_flags(requires: Sequence[str]) -> None:
    missing = sorted(set(requires) - cpu_features.detect().flags)
    if missing:
        raise TvmcompressError(
            f"this machine lacks {', '.join(missing)}, which the artifact's target needs: run it on such a CPU, "
            "or compile for --target host"
        )


def _check_gpu() -> None:
    import tvm

    if not tvm.cuda(0).exist:
        raise TvmcompressError(
            "this artifact is built for CUDA and this machine has no usable CUDA GPU (or TVM lacks the CUDA "
            "runtime): run it on a machine with an NVIDIA GPU and a CUDA-enabled TVM runtime"
        )


def open_session(runner: str, arch: str, library: str, requires: Sequence[str] = (), threads: int = 0) -> Session:
    """Load a library the way the manifest's runner kind says it runs on this machine; `threads`: CPU workers
    (the artifact's num-cores; 0: all of TVM's pool)."""
    if runner == "native":
        _check_host_flags(requires)
        return VMSession(library, "cpu", threads)
    if runner == "gpu":
        _check_gpu()
        return VMSession(library, "cuda")
    if runner in ("qemu-aarch64", "qemu-arm", "qemu-riscv64"):
        return QemuSession(arch, library)
    if runner == "link-check":
        raise TvmcompressError(
            f"no TVM runtime for {arch} exists on this machine, so its artifacts are link-checked only: "
            f"copy the artifact to a {arch} device to run it"
        )
    raise TvmcompressError(f"unknown runner '{runner}' in the manifest: recompile the artifact with this tvmcompress")
