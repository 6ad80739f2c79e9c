"""The artifact directory: model.so + manifest.json + report.json/html (+ tuning/), written atomically.

`Artifact` loads a finished one; writing it (`ArtifactWriter`), its file names and the manifest's shape are in
artifact_files.py, re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping

from .artifact_files import (  # noqa: F401 - re-exported: the artifact's names, as before the split
    ARTIFACT_DIRS,
    ARTIFACT_FILES,
    BUNDLE_JSON_NAME,
    LIBRARY_NAME,
    MANIFEST_NAME,
    RELAX_MODULE_NAME,
    REPORT_HTML_NAME,
    REPORT_JSON_NAME,
    SCHEMA_VERSION,
    WEIGHTS_NAME,
    ArtifactWriter,
    IOSpec,
    _refuse_json_constant,
    check_output_dir_writable,
    foreign_content,
    manifest_problem,
    sha256_file,
    write_json,
)
from .errors import TvmcompressError
from .sub_byte_io import from_library, from_storable, to_library

if TYPE_CHECKING:  # numpy loads when a model runs: a CLI cache hit copies files and needs none of it
    import numpy as np

log = logging.getLogger(__name__)


class Artifact:
    """A compiled model directory. `run` executes it the way its target allows on this machine.

    Parameters
    ----------
    directory : str
        The artifact directory (``output`` of :func:`tvmcompress.compile`).

    Raises
    ------
    TvmcompressError
        Not an artifact, or a damaged one (checked before anything is loaded).

    Examples
    --------
    >>> artifact = tvmcompress.Artifact("out/")
    >>> artifact.manifest["target"]["preset"]
    'host'
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        manifest_path = os.path.join(self.directory, MANIFEST_NAME)
        if not os.path.isfile(manifest_path):
            raise TvmcompressError(
                f"'{directory}' is not a tvmcompress artifact (no {MANIFEST_NAME}): pass the -o directory of `tvmcompress compile`"
            )
        try:
            with open(manifest_path, encoding="utf-8") as f:
                self.manifest: dict[str, Any] = json.load(f, parse_constant=_refuse_json_constant)
        except OSError as err:
            raise TvmcompressError(f"cannot read {manifest_path} ({err.strerror}): recompile the artifact") from None
        except (ValueError, RecursionError) as err:  # JSONDecodeError, invalid UTF-8, NaN, nesting too deep
            raise TvmcompressError(f"artifact '{directory}' is damaged ({MANIFEST_NAME}: {err}): recompile it") from None
        if not isinstance(self.manifest, dict):
            raise TvmcompressError(f"artifact '{directory}' is damaged ({MANIFEST_NAME} is not an object): recompile it")
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise TvmcompressError(
                f"artifact schema {self.manifest.get('schema_version')!r} is not {SCHEMA_VERSION}: recompile it with this tvmcompress"
            )
        problem = manifest_problem(self.manifest)
        if problem:
            raise TvmcompressError(f"artifact '{directory}' is damaged ({MANIFEST_NAME}: {problem}): recompile it")
        self.inputs = [IOSpec.from_json(d) for d in self.manifest["inputs"]]
        self.outputs = [IOSpec.from_json(d) for d in self.manifest["outputs"]]
        self.verify_files()
        self._session = None
        self._weight_arrays: list[np.ndarray] | None = None
        self.cache_hit = False  # set by api.compile when the artifact came from the --cache-dir cache

    def verify_files(self) -> None:
        """Check model.so (and weights.bin, relax_module.json where recorded) against the manifest's sha256.

        Why before anything loads: model.so is native code dlopen()ed into this process. A truncated one dies
        with SIGBUS, flipped bytes with SIGSEGV, and one planted in a shared cache runs as the user; the hash
        the build recorded is the trust anchor (the manifest itself is trusted: it is what a build wrote)."""
        for name, expected in self.manifest["hashes"].items():
            if name not in (LIBRARY_NAME, WEIGHTS_NAME, RELAX_MODULE_NAME):
                continue  # source_model, inputs: hashes of the build's inputs, not of files here
            path = os.path.join(self.directory, name)
            if not os.path.isfile(path):  # missing, a directory, or a device (/dev/zero would hash forever)
                raise TvmcompressError(
                    f"artifact '{self.directory}' is damaged ({name} is missing or not a regular file): recompile it"
                )
            try:
                actual = sha256_file(path)
            except OSError as err:
                raise TvmcompressError(
                    f"artifact '{self.directory}' is damaged (cannot read {name}: {err.strerror}): recompile it"
                ) from None
            if actual != expected:
                raise TvmcompressError(
                    f"artifact '{self.directory}' is damaged or was modified ({name} does not match the sha256 its "
                    "manifest records; not loading it): recompile it"
                )

    @property
    def library_path(self) -> str:
        return os.path.join(self.directory, LIBRARY_NAME)

    def export(self, bundle: str | os.PathLike, static: bool = False, name: str | None = None):
        """Write a deploy bundle (C API, TVM runtime, CMake project) for this artifact.

        Parameters
        ----------
        bundle : str or os.PathLike
            The bundle directory to write (replaced atomically; only a bundle tvmcompress wrote is replaced).
        static : bool
            Link the model into ``lib<name>.a`` instead of shipping ``model.so``.
        name : str, optional
            The C name of the model's API (``<name>_create``, ...); default: the model file's name.

        Returns
        -------
        The bundle description (files and sizes); see tvmcompress/deploy.py.

        Raises
        ------
        TvmcompressError
            An unusable name or bundle path, or no runtime for the target.

        Examples
        --------
        >>> tvmcompress.load("out/").export("bundle/", static=True)
        """
        from .deploy import export_bundle

        return export_bundle(self, bundle, static=static, name=name)

    @property
    def target(self) -> dict[str, Any]:
        return self.manifest["target"]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one model call.

        Parameters
        ----------
        inputs : dict of str to numpy.ndarray
            One array per model input, of the model's shape and dtype.

        Returns
        -------
        dict of str to numpy.ndarray
            One array per model output.

        Raises
        ------
        TvmcompressError
            Missing, extra or mis-shaped inputs, or a target that does not run on this machine.

        Examples
        --------
        >>> tvmcompress.load("out/").run({"input": np.zeros((1, 1, 8, 8), "float32")})["logits"].shape
        (1, 10)
        """
        import numpy as np

        from .data import validate_call

        arrays = self._from_storable({name: np.asarray(value) for name, value in inputs.items()})
        if self.manifest.get("dynamic_dims"):  # any shape within the compiled ranges (dynamic_shapes.py)
            from .dynamic_shapes import check_call

            check_call(arrays, self.manifest["inputs"], self.manifest["dynamic_dims"], source="inputs")
        else:
            validate_call(arrays, self.inputs, source="inputs (one model call; run_batches() takes stacked samples)")
        return self._call([to_library(arrays[spec.name], spec.dtype) for spec in self.inputs])

    def run_batches(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every sample of a stacked `.npz`-style dict; outputs are stacked on axis 0 the same way."""
        import numpy as np

        from .data import iterate_batches, validate_inputs

        if self.manifest.get("dynamic_dims"):
            # A dynamic artifact takes the arrays as one call of their own shape (a batch dim is in the ranges).
            return self.run(data)
        data = self._from_storable(dict(data))
        validate_inputs(data, self.inputs, source="inputs")
        weights = self.weight_arrays()
        samples = [
            [*(to_library(batch[spec.name], spec.dtype) for spec in self.inputs), *weights]
            for batch in iterate_batches(data, self.inputs)
        ]
        results: dict[str, list[np.ndarray]] = {spec.name: [] for spec in self.outputs}
        for values in self.session().run_many(samples):
            for name, value in self._named(values).items():
                results[name].append(value if value.ndim else value[None])
        return {name: np.concatenate(parts, axis=0) for name, parts in results.items()}

    def session(self):
        """The library, loaded once for this artifact (see targets.runners.open_session)."""
        from .targets.runners import open_session

        if self._session is None:
            target = self.target
            self._session = open_session(
                target["runner"], target["arch"], self.library_path, requires=target.get("requires", []),
                threads=int(target.get("json", {}).get("num-cores", 0) or 0),
            )
        return self._session

    def _call(self, ordered: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self._named(self.session()([*ordered, *self.weight_arrays()]))

    def weight_arrays(self) -> list[np.ndarray]:
        """What main takes after the inputs: the weights of weights.bin with --separate-weights (read once), else []."""
        if not self.manifest.get("separate_weights"):
            return []
        if self._weight_arrays is None:
            from .weights_file import read

            self._weight_arrays = read(os.path.join(self.directory, WEIGHTS_NAME))
        return self._weight_arrays

    def _named(self, values: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(values) != len(self.outputs):
            raise RuntimeError(f"the library returned {len(values)} outputs, the manifest lists {len(self.outputs)}")
        return {spec.name: from_library(value, spec.dtype) for spec, value in zip(self.outputs, values)}

    def _from_storable(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sub-byte inputs given in their library dtype (as .npz files must hold them), as the model's dtype."""
        specs = {spec.name: spec for spec in self.inputs}
        return {name: from_storable(a, specs[name].dtype, name) if name in specs else a for name, a in arrays.items()}


def load(directory: str | os.PathLike) -> Artifact:
    """Open a compiled artifact directory for running or exporting.

    The manifest's structure and the SHA-256 of ``model.so``, ``weights.bin`` and ``relax_module.json`` are checked
    before anything is loaded.

    Parameters
    ----------
    directory : str or os.PathLike
        The ``output`` of :func:`compile` (``-o`` of ``tvmcompress compile``).

    Returns
    -------
    Artifact
        ``.run({input name: array})`` returns ``{output name: array}``; ``.manifest`` is the build record.

    Raises
    ------
    TvmcompressError
        Not an artifact, a damaged or modified file, or an artifact of another schema version.

    Examples
    --------
    >>> artifact = tvmcompress.load("out/")
    >>> outputs = artifact.run({"input": np.zeros((1, 1, 8, 8), "float32")})
    """
    return Artifact(os.fspath(directory))
