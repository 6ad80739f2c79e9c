"""`tvmcompress export`: turn a compiled artifact into a self-contained deploy bundle with a C API.

Bundle layout (stable: tvmcompress/cmake's `tvmcompress_add_model` links it without reading any file at
configure time; `bundle.json` says the same for tools):

    BUNDLE/
        bundle.json            name, target, static, separate_weights, inputs/outputs, files, link (below)
        model.h                the C API: <name>_create/_run/_destroy/_last_error, error codes <NAME>_OK ...,
                               <NAME>_NUM_INPUTS/_OUTPUTS, <name>_input_names/_dtypes/_ndims/_shapes/_bytes
                               (and _output_*); no TVM types; every identifier carries the model's name
        lib<name>.a            static bundle: ONE relocatable object holding the model's kernels, its Relax VM
                               bytecode and (unless separate) its weights as a TVM system library with symbol
                               prefix "tvmc_<name>_", plus the C API; its global symbols are prefixed (or
                               weak copies of TVM-FFI inline functions), so two models link into one program.
                               shared bundle: the C API only; it loads model.so at create time.
        model.so               shared bundles only: the artifact's library, read from <name>_create's resource_dir
        weights.bin            artifacts compiled with --separate-weights / --compress-weights only (format:
                               tvmcompress/weights_file.py; the C reader is deploy_templates/weights_reader.h)
        runtime/lib/           libtvm_runtime.so, libtvm_ffi.so (+ libtvm_runtime_extra.so when the wheel has
                               it) for the target architecture: from the apache-tvm wheels (x86-64, aarch64) or
                               built from the wheel's runtime sources (armv7, riscv64; targets/runtime_cache.py)
        main.c                 run_model IN.bin OUT.bin [NUM_THREADS]: the example program users copy
        CMakeLists.txt         builds run_model; imported target `tvmcompress::<name>` = lib<name>.a + model.h
                               + runtime (usable with add_subdirectory(BUNDLE))
        cmake/toolchain.cmake  the target's cross compiler (the host compiler for x86-64)

Linking a program against a bundle (what CMakeLists.txt does): the C or C++ sources with `-I BUNDLE`, then
`BUNDLE/lib<name>.a -Wl,--no-as-needed BUNDLE/runtime/lib/libtvm_runtime.so [libtvm_runtime_extra.so]
BUNDLE/runtime/lib/libtvm_ffi.so -Wl,--as-needed -lpthread -ldl -lm` (plus `bundle.json` link.system_libraries),
linked with the C++ driver, and the runtime directory on the rpath. --no-as-needed matters: nothing calls
libtvm_runtime by name, but loading it registers the Relax VM. Files the model reads at create time (model.so,
weights.bin) are looked up in `resource_dir`, by default the running executable's directory.
`cmake --install build --prefix DIR` lays out DIR/bin/run_model (+ those files) and DIR/lib/ (the runtime).

A static model is rebuilt at export time from the artifact's saved Relax module (`relax_module.json`, the
module exactly as compile built model.so from it) with the IRModule attribute `system_lib_prefix`, the same
target and pipeline, and the artifact's tuning records, so it runs the same kernels as model.so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .artifact_files import LIBRARY_NAME, RELAX_MODULE_NAME, WEIGHTS_NAME, ArtifactWriter, IOSpec, write_json
from .errors import TvmcompressError

if TYPE_CHECKING:
    from .artifact import Artifact
    from .targets.presets import TargetPreset

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "deploy_templates"
CODEC_DIR = Path(__file__).parent / "codec"  # the weight codec's C decoder (tvmcompress/weight_codec.py)
BUNDLE_SCHEMA_VERSION = 1
BUNDLE_JSON = "bundle.json"
HEADER_NAME = "model.h"
RUNTIME_DIR = "runtime/lib"
# CMAKE_SYSTEM_PROCESSOR of each architecture.
_PROCESSORS = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7": "armv7-a", "riscv64": "riscv64"}


@dataclass(frozen=True)
class BundleSummary:
    """What `export` wrote: printed by `tvmcompress export --json`."""

    bundle: str
    name: str
    target: str
    static: bool
    separate_weights: bool
    files: dict[str, int]  # relative path -> bytes

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sanitize_name(text: str) -> str:
    """A C identifier prefix from a model or directory name: lower case, [a-z0-9_], not starting with a digit.
    (tvmcompress/cmake/TvmcompressModel.cmake's _tvmcompress_c_name derives the same name.)"""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", text).strip("_").lower()
    if not name:
        name = "model"
    if name[0].isdigit():
        name = f"model_{name}"
    return name


def default_name(artifact: "Artifact") -> str:
    """The source model's file name (recorded at compile time), else the artifact directory's name."""
    recorded = artifact.manifest.get("model_name")
    return sanitize_name(str(recorded) if recorded else os.path.basename(artifact.directory.rstrip("/")))


def export_bundle(
    artifact: "Artifact", bundle: str | os.PathLike, static: bool = False, name: str | None = None
) -> BundleSummary:
    """Write the deploy bundle of `artifact` to `bundle` (replaced atomically; nothing is left on failure)."""
    bundle = os.fspath(bundle)
    if name is not None and sanitize_name(name) != name:
        raise TvmcompressError(f"bad --name '{name}': use a C identifier such as {sanitize_name(name)}")
    name = name or default_name(artifact)
    if os.path.isdir(bundle) and os.listdir(bundle) and not os.path.isfile(os.path.join(bundle, BUNDLE_JSON)):
        # Replacing a bundle is fine; replacing someone's project directory is not.
        raise TvmcompressError(f"'{bundle}' exists and is not an export bundle: choose another -o path or remove it")
    preset = _artifact_preset(artifact)
    separate_weights = bool(artifact.manifest.get("separate_weights", False))
    if separate_weights and not os.path.isfile(os.path.join(artifact.directory, WEIGHTS_NAME)):
        raise TvmcompressError(f"artifact '{artifact.directory}' lacks {WEIGHTS_NAME}: recompile it")
    runtime_lib = _runtime_libraries(preset.arch)
    if static and not os.path.isfile(os.path.join(artifact.directory, RELAX_MODULE_NAME)):
        raise TvmcompressError(
            f"artifact '{artifact.directory}' has no {RELAX_MODULE_NAME} (compiled by an older tvmcompress): "
            "recompile it, then export --static"
        )
    log.info("exporting %s as %s bundle '%s' for %s", artifact.directory, "a static" if static else "a shared",
             name, preset.name)
    with ArtifactWriter(bundle) as writer, tempfile.TemporaryDirectory(prefix="tvmcompress-export-") as work:
        root = Path(writer.tmpdir)
        _write_template("model.h.in", root / HEADER_NAME, _header_values(artifact, preset, name, separate_weights))
        objects = _model_objects(artifact, preset, name, Path(work), separate_weights) if static else []
        if not static:
            shutil.copyfile(artifact.library_path, root / LIBRARY_NAME)
        if separate_weights:
            shutil.copyfile(os.path.join(artifact.directory, WEIGHTS_NAME), root / WEIGHTS_NAME)
        api_objects = _compile_api(preset, name, static, _weights_spec(artifact) if separate_weights else None,
                                   root, Path(work))
        _archive(preset, name, [*objects, *api_objects], root / f"lib{name}.a", Path(work))
        (root / RUNTIME_DIR).mkdir(parents=True)
        for lib in runtime_lib:
            shutil.copyfile(lib, root / RUNTIME_DIR / lib.name)
        link = _link_info(preset, name, runtime_lib)
        _write_template("main.c.in", root / "main.c", _name_values(name))
        _write_template("CMakeLists.txt.in", root / "CMakeLists.txt", _cmake_values(name, link, static, separate_weights))
        (root / "cmake").mkdir()
        _write_template("toolchain.cmake.in", root / "cmake" / "toolchain.cmake", _toolchain_values(preset, name))
        files = {
            str(path.relative_to(root)): path.stat().st_size for path in sorted(root.rglob("*")) if path.is_file()
        }
        write_json(
            str(root / BUNDLE_JSON),
            {
                "schema_version": BUNDLE_SCHEMA_VERSION,
                "tvmcompress": __version__,
                "name": name,
                "target": {key: artifact.target[key] for key in ("preset", "arch", "json")},
                "static": static,
                "separate_weights": separate_weights,
                "system_lib_prefix": _system_lib_prefix(name) if static else None,
                "inputs": [spec.to_json() for spec in artifact.inputs],
                "outputs": [spec.to_json() for spec in artifact.outputs],
                "files": files,
                "link": link,
            },
        )
        files[BUNDLE_JSON] = (root / BUNDLE_JSON).stat().st_size
    log.info("wrote bundle %s", bundle)
    return BundleSummary(os.path.abspath(bundle), name, artifact.target["preset"], static, separate_weights,
                         dict(sorted(files.items())))


# ---- the model ---------------------------------------------------------------------------------------------


def _system_lib_prefix(name: str) -> str:
    return f"tvmc_{name}_"


def _artifact_preset(artifact: "Artifact") -> "TargetPreset":
    """The preset the artifact was built for, with the exact TVM target its manifest records."""
    from .targets import presets

    target = artifact.target
    if target.get("arch") not in _PROCESSORS:
        raise TvmcompressError(
            f"export builds C bundles for CPU targets (x86-64, aarch64, armv7, riscv64), not {target.get('preset')}: "
            "compile for one of those"
        )
    recorded = target["json"]
    try:
        preset = presets.resolve_preset(target["preset"])
        preset = presets.with_cores(preset, recorded.get("num-cores"))
        if presets.full_target_json(preset) == recorded:
            return preset
    except TvmcompressError:
        pass  # "custom" targets: rebuild the preset from the recorded JSON below
    preset = presets.resolve_preset(json.dumps(recorded))
    return dataclasses.replace(preset, name=target["preset"])


def _built_with_winograd(manifest: dict) -> bool:
    """The rebuild must legalize convolutions as the artifact's build did (artifacts from before the option: yes)."""
    for step in manifest.get("passes", []):
        if step.get("name") == "tvmcompress.cpu_pipeline":
            return bool(step.get("options", {}).get("winograd", True))
    return True


def _model_objects(
    artifact: "Artifact", preset: "TargetPreset", name: str, work: Path, separate_weights: bool
) -> list[Path]:
    """Rebuild the artifact's model as object files of a TVM system library with the model's prefix."""
    import tvm
    from tvm.support import tar

    from .build import compile_module

    with open(os.path.join(artifact.directory, RELAX_MODULE_NAME), encoding="utf-8") as f:
        mod = tvm.ir.load_json(f.read())
    mod = mod.with_attr("system_lib_prefix", _system_lib_prefix(name))
    tuned = None
    if artifact.manifest.get("tuning") is not None:
        from .schedules.tuning import winning_database

        tuned = winning_database(os.path.join(artifact.directory, "tuning"), tvm.target.Target(preset.tvm_target))
    log.info("rebuilding the model as a system library (prefix %s)", _system_lib_prefix(name))
    lift = None
    if separate_weights:
        from .lift_weights import LiftWeights

        lift = LiftWeights()
    executable, _ = compile_module(mod, preset, tuned, lift, _built_with_winograd(artifact.manifest))
    if lift is not None:
        # The C API feeds weights.bin to this rebuilt main: it must take exactly the artifact's weights.
        from .weights_file import read

        shipped = read(os.path.join(artifact.directory, WEIGHTS_NAME))
        if len(shipped) != len(lift.lifted) or not all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(shipped, lift.lifted)
        ):
            raise RuntimeError(f"the static rebuild of {artifact.directory} lifted other weights than its {WEIGHTS_NAME}")
    archive = work / "model.tar"
    executable.export_library(str(archive), fcompile=tar.tar)
    objects_dir = work / "objects"
    objects_dir.mkdir()
    with tarfile.open(archive) as members:
        members.extractall(objects_dir, filter="data")
    return sorted(objects_dir.glob("*.o"))


# ---- the C API and the static library ---------------------------------------------------------------------


def _binutils_prefix(preset: "TargetPreset") -> str:
    """`aarch64-linux-gnu-` for `aarch64-linux-gnu-g++`; "" for the host's `g++`."""
    compiler = preset.toolchain.compiler
    return compiler[: -len("g++")] if compiler.endswith("g++") else ""


def _tool(preset: "TargetPreset", tool: str) -> str:
    name = _binutils_prefix(preset) + tool
    path = shutil.which(name)
    if path is None:
        raise TvmcompressError(f"'{name}' is not installed: apt-get install binutils{_debian_suffix(preset)}")
    return path


def _debian_suffix(preset: "TargetPreset") -> str:
    prefix = _binutils_prefix(preset).rstrip("-")
    return f"-{prefix.replace('_', '-')}" if prefix else ""


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        # Our own generated code failing to build is our bug: keep the whole compiler output.
        raise RuntimeError(f"{what} failed:\n{' '.join(command)}\n{result.stderr}")


def _weights_spec(artifact: "Artifact") -> str:
    """C initializers of the weights' dtypes and shapes, which the C API checks weights.bin against."""
    from .weights_file import read_header

    _, entries = read_header(os.path.join(artifact.directory, WEIGHTS_NAME))
    rows = []
    for entry in entries:
        dims = ", ".join(str(d) for d in entry.shape) or "0"
        rows.append(f"    {{{_c_string(entry.dtype)}, {len(entry.shape)}, {{{dims}}}}},")
    return "\n".join(rows)


def _compile_api(
    preset: "TargetPreset", name: str, static: bool, weights_spec: str | None, root: Path, work: Path
) -> list[Path]:
    """model_api.cc.in, compiled for the target. `weights_spec`: see _weights_spec (None: weights embedded)."""
    from .targets.runtime_cache import ffi_include_dirs
    from .targets.toolchain import find_compiler

    values = {
        **_name_values(name), "static": "true" if static else "false", "prefix": _system_lib_prefix(name),
        "weights_spec": weights_spec or "",
    }
    source = work / f"{name}_api.cc"
    _write_template("model_api.cc.in", source, values)
    objects = [work / f"{name}_api.o"]
    includes = [arg for path in [root, work, CODEC_DIR, *ffi_include_dirs()] for arg in ("-I", str(path))]
    flags = ["-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-g0", "-ffile-prefix-map=/tmp=."]
    if weights_spec is not None:
        shutil.copyfile(TEMPLATES / "weights_reader.h", work / "weights_reader.h")
        # The weights file's entropy codec (C99), linked in beside the reader; see _archive for its symbols.
        objects.append(work / "weight_codec.o")
        c_compiler = _binutils_prefix(preset) + "gcc"
        _run([c_compiler, "-std=c99", *flags, "-c", str(CODEC_DIR / "weight_codec.c"), "-o", str(objects[1])],
             "compiling the weight codec")
    command = [
        find_compiler(preset), "-std=c++17", *flags, "-Wno-psabi", *includes, "-c", str(source), "-o", str(objects[0]),
    ]
    _run(command, f"compiling the C API of {name}")
    return objects


def _archive(preset: "TargetPreset", name: str, objects: list[Path], output: Path, work: Path) -> None:
    """One relocatable object -> lib<name>.a. Merging (ld -r) means a program that calls <name>_create pulls
    in the model's objects too, whose static constructors register the system-library symbols; with separate
    archive members the linker would drop them.

    Two models in one program do not clash: the model's strong symbols carry the system-lib prefix, the C API's
    carry the name, its helpers are in an anonymous namespace, and what remains global are the weak COMDAT
    copies of TVM-FFI's inline functions, which the linker merges. (Localizing those with objcopy breaks the
    link: "defined in discarded section".) The weight codec's plain C functions (tvcw_*, no COMDAT) are made
    local after the merge, so each model keeps its own copy."""
    merged = work / f"{name}.o"
    _run([_tool(preset, "ld"), "-r", "-o", str(merged), *map(str, objects)], f"merging the objects of {name}")
    _run([_tool(preset, "objcopy"), "--wildcard", "--localize-symbol=tvcw_*", str(merged)],
         f"localizing the weight codec of {name}")
    _run([_tool(preset, "ar"), "rcsD", str(output), str(merged)], f"archiving lib{name}.a")


# ---- the runtime -------------------------------------------------------------------------------------------


def _runtime_libraries(arch: str) -> list[Path]:
    """The TVM runtime shared libraries for `arch`: the installed wheel's for x86-64, else the cached ones."""
    if arch == "x86_64":
        from .targets.runtime_source_build import package_dir

        candidates = [
            package_dir("tvm") / "lib" / "libtvm_runtime.so",
            package_dir("tvm") / "lib" / "libtvm_runtime_extra.so",
            package_dir("tvm_ffi") / "lib" / "libtvm_ffi.so",
        ]
    else:
        from .targets import runtime_cache

        lib = runtime_cache.prepare_runtime(arch) / "lib"
        candidates = [lib / "libtvm_runtime.so", lib / "libtvm_runtime_extra.so", lib / "libtvm_ffi.so"]
    return [path for path in candidates if path.is_file()]


def _link_info(preset: "TargetPreset", name: str, runtime_lib: list[Path]) -> dict[str, Any]:
    from .targets.runtime_cache import FOREIGN_ARCHES

    extra = list(FOREIGN_ARCHES[preset.arch].runtime_link_libs) if preset.arch in FOREIGN_ARCHES else []
    return {
        "static_libraries": [f"lib{name}.a"],
        # In this order, with --no-as-needed around them (see the module docstring).
        "runtime_libraries": [f"{RUNTIME_DIR}/{path.name}" for path in runtime_lib],
        "system_libraries": ["pthread", "dl", "m", *(flag.removeprefix("-l") for flag in extra)],
        "linker_language": "CXX",
    }


# ---- templates ---------------------------------------------------------------------------------------------


def _write_template(template: str, path: Path, values: dict[str, str]) -> None:
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Za-z_]+@", text)
    if leftover:
        raise RuntimeError(f"template {template} has no value for {leftover.group(0)}")
    path.write_text(text)


def _name_values(name: str) -> dict[str, str]:
    return {"name": name, "NAME": name.upper()}


def _c_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable text is a valid C string literal


def _io_constants(name: str, kind: str, specs: list[IOSpec]) -> list[str]:
    count = len(specs)
    lines = [
        f"static const char* const {name}_{kind}_names[{count}] = {{{', '.join(_c_string(s.name) for s in specs)}}};",
        f"static const char* const {name}_{kind}_dtypes[{count}] = "
        f"{{{', '.join(_c_string(_c_dtype(s)) for s in specs)}}};",
        f"static const int {name}_{kind}_ndims[{count}] = {{{', '.join(str(len(s.shape)) for s in specs)}}};",
    ]
    for index, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in spec.shape) or "0"  # a scalar's shape array holds a placeholder
        lines.append(f"static const int64_t {name}_{kind}{index}_shape[{max(len(spec.shape), 1)}] = {{{dims}}};")
    shapes = ", ".join(f"{name}_{kind}{index}_shape" for index in range(count))
    lines.append(f"static const int64_t* const {name}_{kind}_shapes[{count}] = {{{shapes}}};")
    sizes = ", ".join(str(_byte_size(spec)) for spec in specs)
    lines.append(f"static const size_t {name}_{kind}_bytes[{count}] = {{{sizes}}};")
    return lines


def _c_dtype(spec: IOSpec) -> str:
    """The dtype of the buffer model.so takes or fills: a sub-byte type (int4, float4e2m1, ...) travels in its
    carrier type (tvmcompress/sub_byte_io.py), and C has no other view of it."""
    return spec.library_dtype or spec.dtype


def _byte_size(spec: IOSpec) -> int:
    dtype = _c_dtype(spec)
    itemsize = 1 if dtype == "bool" else 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    return int(np.prod(spec.shape, dtype=np.int64)) * itemsize


def _header_values(artifact: "Artifact", preset: "TargetPreset", name: str, separate_weights: bool) -> dict[str, str]:
    for spec in [*artifact.inputs, *artifact.outputs]:
        if any(d < 0 for d in spec.shape):
            raise TvmcompressError(f"'{spec.name}' has a dynamic shape {list(spec.shape)}: recompile with --input-shape")
    lines = [*_io_constants(name, "input", artifact.inputs), *_io_constants(name, "output", artifact.outputs)]
    from .dynamic_shapes import c_header_lines

    lines += c_header_lines(name, artifact.manifest)  # dynamic shapes: the ranges and NAME_run_shaped
    return {
        **_name_values(name),
        "version": __version__,
        "target": preset.name,
        "num_inputs": str(len(artifact.inputs)),
        "num_outputs": str(len(artifact.outputs)),
        "separate_weights": "1" if separate_weights else "0",
        "io_constants": "\n".join(lines),
    }


def _cmake_values(name: str, link: dict[str, Any], static: bool, separate_weights: bool) -> dict[str, str]:
    runtime = ";".join(f"${{BUNDLE_DIR}}/{path}" for path in link["runtime_libraries"])
    extra = "".join(f";{lib}" for lib in link["system_libraries"] if lib not in ("pthread", "dl", "m"))
    # Files the model reads at create time go next to run_model: <name>_create(NULL, ...) looks there.
    resources = ([] if static else [LIBRARY_NAME]) + ([WEIGHTS_NAME] if separate_weights else [])
    copy = "".join(
        f'add_custom_command(TARGET run_model POST_BUILD COMMAND ${{CMAKE_COMMAND}} -E copy_if_different\n'
        f'  "${{BUNDLE_DIR}}/{resource}" "$<TARGET_FILE_DIR:run_model>/{resource}")\n'
        for resource in resources
    )
    files = " ".join(f'"${{BUNDLE_DIR}}/{path}"' for path in link["runtime_libraries"])
    install = "".join(f'install(FILES "${{BUNDLE_DIR}}/{resource}" DESTINATION bin)\n' for resource in resources)
    return {
        **_name_values(name), "runtime_libs": runtime, "extra_libs": extra, "copy_resources": copy,
        "runtime_files": files, "install_resources": install,
    }


def _toolchain_values(preset: "TargetPreset", name: str) -> dict[str, str]:
    from .targets.runtime_cache import FOREIGN_ARCHES

    prefix = _binutils_prefix(preset)
    sysroot = ""
    if preset.arch in FOREIGN_ARCHES:
        root = FOREIGN_ARCHES[preset.arch].sysroot
        sysroot = "\n".join([
            f"set(CMAKE_FIND_ROOT_PATH {root})",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)",
        ])
    return {
        **_name_values(name),
        "target": preset.name,
        "triple": str(preset.tvm_target.get("mtriple", "")),
        "processor": _PROCESSORS[preset.arch],
        "c_compiler": f"{prefix}gcc",
        "cxx_compiler": preset.toolchain.compiler,
        "sysroot": sysroot,
    }
