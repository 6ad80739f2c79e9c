"""tvmcompress: ONNX -> TVM Relax -> pruned/quantized libraries for x86-64, ARM and CUDA."""

__version__ = "0.1.0"

from .errors import TvmcompressError

__all__ = ["TvmcompressError", "__version__"]
