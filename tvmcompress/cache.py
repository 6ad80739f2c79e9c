"""A content-addressed cache of whole artifact directories (`--cache-dir DIR`, `compile(..., cache_dir=)`).

Key: sha256 over the model bytes, the canonical options JSON (`CompileOptions.to_json`), the target's identity
(the preset's TVM target dict and linker; for `host`, the CPU's model name, flags and core count, which is what
LLVM's host detection reads), the calibration and evaluation files' bytes, the tuning database's bytes, and the versions of
tvmcompress, TVM and TVM-FFI plus a digest of tvmcompress's own source files (an edited checkout must not
reuse builds of the old code). Budgets (--max-ram/--max-flash) are not in the key: they check an artifact,
they do not change it.

Layout: DIR/<key>/ is a complete artifact directory, exactly the bytes the fresh build wrote to its OUT, so a
hit's files are byte-identical to that build's (manifest.json keeps the `build_seconds` of the build that
made them). Entries appear by one rename of a finished temporary directory; a hit copies (never hardlinks: the
user may edit OUT) into a temporary directory beside OUT and renames it into place. A shared flock on DIR/.lock
covers reads and stores, an exclusive one `clear`, so a clear never pulls an entry out from under a copy.

Computing the key and restoring a hit (`lookup`) import neither TVM nor ONNX nor numpy; the CLI tries
`lookup` before it imports tvmcompress.api, so a hit costs the interpreter's start-up plus milliseconds
(bench/bench_cache_hit.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import TvmcompressError

log = logging.getLogger(__name__)

KEY_FORMAT = 1  # bump when the key's contents or the entry layout change
ARTIFACTS_SUBDIR = "artifacts"  # ~/.cache/tvmcompress also holds runtime/ (foreign runtimes) and test data
_LOCK_NAME = ".lock"
_SOURCE_SUFFIXES = (".py", ".cc", ".c", ".h", ".cmake", ".txt", ".json", ".html", ".in")


def cache_home() -> Path:
    """$XDG_CACHE_HOME/tvmcompress, else ~/.cache/tvmcompress."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvmcompress"


def default_cache_dir() -> Path:
    """Where `--cache` keeps artifacts: <cache_home>/artifacts."""
    return cache_home() / ARTIFACTS_SUBDIR


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_tree(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over (relative path, bytes) of every file under root, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or (suffixes is not None and path.suffix not in suffixes):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Digest of tvmcompress's installed sources (tvmcompress/, passes/, targets/)."""
    digest = hashlib.sha256()
    for package in ("tvmcompress", "tvmcompress.passes", "tvmcompress.targets"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            digest.update(package.encode() + b"=" + _hash_tree(Path(location), _SOURCE_SUFFIXES).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "none"

    from . import __version__

    return {
        "tvmcompress": __version__,
        "tvmcompress-source": source_digest(),
        "apache-tvm": version("apache-tvm"),
        "apache-tvm-ffi": version("apache-tvm-ffi"),
    }


def _host_identity() -> dict[str, Any]:
    """What decides the `host` preset (LLVM's mcpu and the core count), read without importing TVM."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = value.strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cpu": model, "flags": _sha256_bytes(flags.encode()), "cores": cores}


def _compiler_identity(compiler: str) -> dict[str, Any]:
    """The linker that writes model.so: its resolved path, size and mtime (a changed toolchain changes bytes)."""
    path = shutil.which(compiler)
    if path is None:
        return {"compiler": compiler}
    real = os.path.realpath(path)
    stat = os.stat(real)
    return {"compiler": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def target_identity(spec: str, cores: int | None) -> dict[str, Any]:
    from .targets import presets

    spec = spec.strip()
    if spec == "host":
        return {"host": _host_identity(), "cores": cores, "toolchain": _compiler_identity("g++")}
    preset = presets.with_cores(presets.resolve_preset(spec), cores)
    return {
        "preset": preset.name,
        "tvm_target": preset.tvm_target,
        "toolchain": _compiler_identity(preset.toolchain.compiler),
    }


def cache_key(model_bytes: bytes, target: str, options, model_name: str | None = None) -> str:
    """The entry name for compiling `model_bytes` for `target` with `options` (a CompileOptions).
    model_name (the file's stem) is in the manifest, so it is in the key too."""
    material: dict[str, Any] = {
        "format": KEY_FORMAT,
        "model": _sha256_bytes(model_bytes),
        "model_name": model_name,
        "options": options.to_json(),
        "target": target_identity(target, options.cores),
        "versions": _versions(),
    }
    # Data files change the build through their contents (calibration ranges, accuracy-budget decisions), not their
    # paths: hash the bytes.
    for field in ("calibration", "eval_data"):
        path = getattr(options, field, None)
        if path:
            material[field] = _sha256_bytes(Path(path).read_bytes())
    if options.tune is not None and options.tune.database_dir and os.path.isdir(options.tune.database_dir):
        material["tuning_db"] = _hash_tree(Path(options.tune.database_dir))
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return _sha256_bytes(text.encode())


def _model_bytes_and_name(model) -> tuple[bytes, str | None]:
    """What the key needs of a model given as a path, bytes or an onnx.ModelProto (not imported: duck-typed).
    The name is the file's stem, which the manifest records (api._model_name)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        with open(path, "rb") as f:
            return f.read(), os.path.splitext(os.path.basename(path))[0]
    if isinstance(model, bytes):
        return model, None
    return model.SerializeToString(deterministic=True), None


def lookup(cache_dir, model, target: str, options, output: str, budgets=None):
    """(key, Artifact from the cache copied to `output`) on a hit, (key, None) on a miss, (None, None) when
    the model or calibration file cannot be read (the fresh build reports that). Budgets are checked against
    the cached manifest before anything is written. Imports neither TVM nor ONNX."""
    from .footprint import check_budgets

    try:
        model_bytes, name = _model_bytes_and_name(model)
        key = cache_key(model_bytes, target, options, name)
    except OSError:
        return None, None
    if not ArtifactCache(cache_dir).restore(key, output, check=lambda manifest: check_budgets(budgets, manifest)):
        return key, None
    from .artifact import Artifact

    artifact = Artifact(output)
    artifact.cache_hit = True
    return key, artifact


@dataclass(frozen=True)
class CacheInfo:
    directory: str
    entries: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "entries": self.entries, "bytes": self.bytes}


class ArtifactCache:
    """One cache directory. `restore` and `store` are safe to call from concurrent processes."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser().absolute()

    def _ensure(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TvmcompressError(
                f"cannot use cache directory '{self.directory}': {err.strerror}; pass another --cache-dir"
            ) from None

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self._ensure()
        with open(self.directory / _LOCK_NAME, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def entry(self, key: str) -> Path:
        return self.directory / key

    def _entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def restore(self, key: str, output: str, check: Callable[[dict], None] | None = None) -> bool:
        """Copy entry `key` to `output` (atomically, replacing it); False on a miss. `check(manifest)` runs first
        and may raise (budgets), leaving `output` untouched."""
        from .artifact import MANIFEST_NAME, ArtifactWriter

        self._ensure()  # an unusable cache directory is an error now, not a warning after a long build
        entry = self.entry(key)
        if not (entry / MANIFEST_NAME).is_file():
            return False
        with self._locked(exclusive=False):
            if not (entry / MANIFEST_NAME).is_file():  # cleared while we waited
                return False
            if check is not None:
                with open(entry / MANIFEST_NAME, encoding="utf-8") as f:
                    check(json.load(f))
            with ArtifactWriter(output) as writer:
                # copyfile, not copy2: fresh mtimes, so build systems see OUT as newer than its inputs.
                shutil.copytree(entry, writer.tmpdir, copy_function=shutil.copyfile, dirs_exist_ok=True)
        log.info("cache hit %s: copied %s to %s", key[:12], entry, output)
        return True

    def store(self, key: str, artifact_dir: str) -> None:
        """Add the finished artifact at `artifact_dir` as entry `key`. A concurrent store of the same key is
        harmless (the same bytes; the first rename wins). Failures only warn: the build itself succeeded."""
        try:
            with self._locked(exclusive=False):
                if self.entry(key).is_dir():
                    return
                staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.tmp-", dir=self.directory))
                try:
                    shutil.copytree(artifact_dir, staging, copy_function=shutil.copyfile, dirs_exist_ok=True)
                    try:
                        os.rename(staging, self.entry(key))
                    except OSError:
                        if not self.entry(key).is_dir():
                            raise
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        except (OSError, TvmcompressError) as err:
            log.warning("could not store the build in the cache %s: %s", self.directory, err)
            return
        log.info("stored %s in the cache as %s", artifact_dir, key[:12])

    def info(self) -> CacheInfo:
        entries = self._entries()
        size = sum(p.stat().st_size for e in entries for p in e.rglob("*") if p.is_file())
        return CacheInfo(str(self.directory), len(entries), size)

    def clear(self) -> CacheInfo:
        """Remove every entry (and leftovers of interrupted stores); returns what was removed."""
        if not self.directory.is_dir():
            return CacheInfo(str(self.directory), 0, 0)
        with self._locked(exclusive=True):
            removed = self.info()
            for path in self.directory.iterdir():
                if path.name == _LOCK_NAME:
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return removed


def clear_everything() -> CacheInfo:
    """`tvmcompress cache clear --all`: the whole <cache_home> (artifacts, prepared foreign runtimes, test data)."""
    home = cache_home()
    if not home.is_dir():
        return CacheInfo(str(home), 0, 0)
    size = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    entries = len(ArtifactCache(default_cache_dir())._entries())
    shutil.rmtree(home)
    return CacheInfo(str(home), entries, size)
