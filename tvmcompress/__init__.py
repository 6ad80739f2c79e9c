"""tvmcompress: ONNX -> TVM Relax -> pruned/quantized libraries for x86-64, ARM and CUDA.

    import tvmcompress
    artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/")
    outputs = tvmcompress.load("out/").run({"input": x})
"""

__version__ = "0.1.0"

from .config import Budgets, CompileOptions, RpcTarget, TuneConfig
from .errors import TvmcompressError
from .passes.distill_config import DistillConfig
from .passes.prune_config import PruneConfig
from .passes.quantize_config import QuantizeConfig
from .threads import set_default_pool_size

# NOTE: before anything creates TVM's thread pool, whose default size on x86 is half the logical CPUs (threads.py).
set_default_pool_size()

# The API and Artifact load on first use (PEP 562): they import ONNX and numpy, which a CLI cache hit
# (tvmcompress/cache.py) must not wait for.
_LAZY = {
    "compile": "api", "inspect": "api", "list_targets": "api", "load": "api", "load_model": "api",
    "Artifact": "artifact",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Artifact",
    "Budgets",
    "CompileOptions",
    "DistillConfig",
    "PruneConfig",
    "QuantizeConfig",
    "RpcTarget",
    "TuneConfig",
    "TvmcompressError",
    "__version__",
    "compile",
    "inspect",
    "list_targets",
    "load",
    "load_model",
]
