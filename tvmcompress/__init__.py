"""tvmcompress: ONNX -> TVM Relax -> pruned/quantized libraries for x86-64, ARM and CUDA.

    import tvmcompress
    artifact = tvmcompress.compile("model.onnx", "aarch64", output="out/")
    outputs = tvmcompress.load("out/").run({"input": x})
"""

__version__ = "0.1.0"

from .errors import TvmcompressError
from .config import CompileOptions
from .api import compile, inspect, list_targets, load, load_model  # noqa: A004 - `compile` is our verb
from .artifact import Artifact

__all__ = [
    "Artifact",
    "CompileOptions",
    "TvmcompressError",
    "__version__",
    "compile",
    "inspect",
    "list_targets",
    "load",
    "load_model",
]
