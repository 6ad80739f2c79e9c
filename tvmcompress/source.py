"""The model a compile starts from, read and checked once: an ONNX model (fixed shapes, or symbolic dims within
ranges: dynamic_shapes.py) or a PyTorch program (torch_import.py).

`open_source` does the cheap reading and checking that must fail before a minutes-long build; the `Source` then
answers what the later steps ask of the model whatever its kind: its bytes and name for the manifest, its input
and output specs, its import into Relax, its manifest I/O entries, the verification of a build against its own
reference (ONNX Runtime, or the PyTorch module), and the report's model statistics. api.py stays one path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import onnx

from . import frontend
from .config import CompileOptions

log = logging.getLogger(__name__)

ModelSource = str | os.PathLike | onnx.ModelProto | bytes


@dataclass
class Source:
    given: Any  # what the caller passed: a path, bytes, an onnx.ModelProto or a torch_import.TorchProgram
    source_bytes: bytes
    inputs: list
    outputs: list
    onnx_model: onnx.ModelProto | None = None  # the ONNX model as given (None for PyTorch)
    canonical: onnx.ModelProto | None = None  # ... canonicalized (frontend.canonicalize)
    torch_program: Any = None
    dynamic: Any = None  # dynamic_shapes.DynamicBuild when options.dims is set

    @property
    def name(self) -> str | None:
        """The model file's name without extension (the default C name of `tvmcompress export`), if it has one."""
        if self.torch_program is not None:
            return self.torch_program.name
        if isinstance(self.given, (str, os.PathLike)):
            return os.path.splitext(os.path.basename(os.fspath(self.given)))[0]
        return None

    @property
    def frontend_steps(self) -> list[str] | None:
        """The manifest's import steps when they are not the ONNX frontend's."""
        return None if self.torch_program is None else ["torch_import.import_to_relax"]

    def import_to_relax(self):
        if self.torch_program is not None:
            from .torch_import import import_to_relax

            return import_to_relax(self.torch_program)
        assert self.canonical is not None
        log.info("importing %d-node graph into Relax", len(self.canonical.graph.node))
        mod = frontend.import_to_relax(self.canonical, self.dynamic.variables if self.dynamic else None)
        return self.dynamic.annotate(mod) if self.dynamic is not None else mod

    def record_io(self, manifest: dict[str, Any], mod) -> None:
        """A dynamic build's symbolic dims and their ranges in the manifest (dynamic_shapes.py)."""
        if self.dynamic is None:
            return
        from .manifest import io_entry

        manifest["inputs"] = self.dynamic.input_entries(self.inputs, io_entry)
        manifest["outputs"] = self.dynamic.output_entries(self.outputs, io_entry, mod)
        manifest["dynamic_dims"] = self.dynamic.manifest_dims()

    def verify(self, artifact, options: CompileOptions, steps, calibration, fallback: dict | None) -> dict[str, Any]:
        """The manifest's verification record of the build in `artifact` (verify.py)."""
        if self.dynamic is not None:
            return self.dynamic.verify(artifact, self.onnx_model, self.canonical, options)
        from .verify import verify_compressed

        reference = None
        if self.torch_program is not None:  # no ONNX model: the build is compared with the module's own outputs
            from .torch_import import TorchReference

            reference = TorchReference(self.torch_program)
        return verify_compressed(artifact, self.onnx_model, self.canonical, options, steps, calibration, fallback,
                                 reference)

    def stats(self) -> dict[str, Any]:
        """Op histogram, parameters and MACs for the report."""
        if self.torch_program is not None:
            from .torch_import import model_stats as torch_stats

            return torch_stats(self.torch_program)
        from .model_stats import model_stats

        assert self.canonical is not None
        return model_stats(self.canonical)


def read_paths(model: Any, options: CompileOptions) -> list[str]:
    """Every file the compile reads (the model, its external data, the data files): OUT must not hold them."""
    from .cache import files_read
    from .torch_import import TorchProgram

    return files_read(model.path if isinstance(model, TorchProgram) else model, options)


def open_source(model: Any, options: CompileOptions) -> Source:
    """Read and check the model: loaded, canonicalized to `options`' shapes and constants, its ops supported and
    its weights finite (unless allowed). Raises TvmcompressError with what to change."""
    from .torch_import import TorchProgram

    if isinstance(model, TorchProgram):
        from .torch_import import check_options

        check_options(options)
        return Source(model, model.source_bytes, list(model.inputs), list(model.outputs), torch_program=model)
    onnx_model = frontend.load_model(model)
    dynamic = None
    if options.dims:  # dynamic shapes: symbolic dims within ranges
        from .dynamic_shapes import DynamicBuild

        dynamic = DynamicBuild(options)
        dynamic.check_model(onnx_model)
    canonical = frontend.canonicalize(onnx_model, dict(options.input_shapes), dict(options.const_inputs))
    frontend.check_supported(canonical)
    if not options.allow_nonfinite_weights:
        frontend.check_finite_weights(canonical)
    inputs, outputs = frontend.model_io(canonical)
    return Source(model, _source_bytes(model, onnx_model), list(inputs), list(outputs), onnx_model, canonical,
                  dynamic=dynamic)


def _source_bytes(source: ModelSource, model: onnx.ModelProto) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    if isinstance(source, bytes):
        return source
    return model.SerializeToString(deterministic=True)
