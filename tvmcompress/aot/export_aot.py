"""`tvmcompress export ARTIFACT -o BUNDLE --aot`: a deploy bundle without the Relax VM or any TVM library.

The artifact's saved Relax module (relax_module.json) is lowered again with the artifact's pipeline, target
and tuning records, exactly as for `export --static`, but not handed to the VM's code generator: its TIR
kernels alone are compiled to one object file, and the straight-line `main` becomes tables that our small C
runtime (deploy_templates/aot_runtime.c) walks: call each kernel with DLTensor arguments that point into one
static arena, an input or the const weights (tvmcompress/aot/program.py says how the arena is laid out).

Bundle layout (what differs from deploy.py's):
    model.h        the same C API (<name>_create/_run/_destroy/_last_error) plus <name>_run_with_arena and
                   <NAME>_ARENA_BYTES, for programs without a heap
    lib<name>.a    one relocatable object: kernels + program tables + weights + runtime; only <name>_*
                   symbols are global, so several models link into one program; needs libm, nothing else
    main.c, CMakeLists.txt, cmake/toolchain.cmake    as in a VM bundle (CMake links lib<name>.a and -lm)
    bundle.json    "aot": true and "footprint" (see Footprint)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..artifact import RELAX_MODULE_NAME, ArtifactWriter, write_json
from ..errors import TvmcompressError
from .program import AotProgram, dlpack_dtype, extract_program

if TYPE_CHECKING:
    from ..artifact import Artifact
    from ..config import Budgets
    from ..targets.mcu_boards import McuBoard
    from ..targets.presets import TargetPreset

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent.parent / "deploy_templates"
WEIGHT_ALIGN = 16  # each const weight in the blob; kernels read weights with element-aligned loads
# Symbols the kernels may need from a TVM runtime, and which of them aot_runtime.c provides.
_PROVIDED = {
    "TVMFFIErrorSetRaisedFromCStrParts", "TVMFFIErrorSetRaisedFromCStr", "TVMBackendAllocWorkspace",
    "TVMBackendFreeWorkspace", "TVMBackendParallelLaunch", "TVMBackendParallelBarrier",
}


@dataclass(frozen=True)
class Footprint:
    """Bytes of an AOT build, as the target's `size` reports its objects (before the final link)."""

    shim_code_bytes: int  # aot_runtime.c: the runtime symbols and the loop over kernels
    api_code_bytes: int  # the generated C API (create/run/destroy, argument checks)
    kernel_code_bytes: int  # the TIR kernels' machine code
    kernel_rodata_bytes: int  # the kernels' read-only data (argument-check messages, lookup tables)
    tables_bytes: int  # the program's tensor/call tables (const data)
    weights_bytes: int  # the const weights, padded to WEIGHT_ALIGN each
    arena_bytes: int  # every intermediate tensor + kernel scratch
    peak_activation_bytes: int | None  # the memory plan's number, for comparison
    # Microcontroller bundles: measured on the linked firmware, run once under qemu (None elsewhere, or when
    # qemu-system-arm is missing). Firmware flash/RAM include start-up code, libc/libgcc parts and I/O buffers.
    stack_bytes: int | None = None
    firmware_flash_bytes: int | None = None
    firmware_static_ram_bytes: int | None = None

    @property
    def flash_bytes(self) -> int:
        return (self.shim_code_bytes + self.api_code_bytes + self.kernel_code_bytes + self.kernel_rodata_bytes
                + self.tables_bytes + self.weights_bytes)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flash_bytes": self.flash_bytes}


@dataclass(frozen=True)
class AotBundleSummary:
    bundle: str
    name: str
    target: str
    static: bool
    separate_weights: bool
    files: dict[str, int]
    footprint: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lower_for_aot(artifact: "Artifact", preset: "TargetPreset", use_tuning: bool = True, checks: bool = False):
    """(VM-ready Relax module, compiled TIR kernels as a runtime module, memory plan, whether the kernels keep
    their assertions) of the artifact.
    `use_tuning`: apply the artifact's tuning records (measured on its own target, so not for a board).
    `checks`: keep the kernels' run-time assertions. Off by default: most of them check the packed-call
    arguments (count, type, ndim, dtype, shape, device of every tensor), which our generated tables pass by
    construction, and they are three quarters of a Cortex-M build's kernel code (digits int8: 34.7 KB with,
    7.3 KB without). A model whose indices are checked at run time (Gather/Scatter/MaxUnpool bounds,
    onnx_ops/indexing.py) always keeps them: an out-of-range index must be an error, never a read past a
    tensor."""
    import tvm

    from ..build import relax_pipeline_for
    from ..deploy import _built_with_winograd
    from ..memory_plan import record_memory_plan

    with open(os.path.join(artifact.directory, RELAX_MODULE_NAME), encoding="utf-8") as f:
        mod = tvm.ir.load_json(f.read())
    if not checks and checks_indices(mod):
        log.info("keeping the kernels' run-time assertions: the model checks its gather/scatter indices")
        checks = True
    target = tvm.target.Target(preset.tvm_target)
    tuned = None
    if use_tuning and artifact.manifest.get("tuning") is not None:
        from ..schedules.tuning import winning_database

        tuned = winning_database(os.path.join(artifact.directory, "tuning"), target)
    pipeline, _ = relax_pipeline_for(target, tuned, _built_with_winograd(artifact.manifest))
    current = tvm.transform.PassContext.current()
    config = {**dict(current.config), "tirx.disable_assert": not checks}
    with tvm.transform.PassContext(opt_level=current.opt_level, required_pass=list(current.required_pass),
                                   disabled_pass=list(current.disabled_pass), instruments=list(current.instruments),
                                   config=config), record_memory_plan() as recorder:
        lowered = pipeline(mod)
        # Only the kernels main calls: lowering leaves some unused (a transpose that became a VM reshape).
        called = _called_kernels(lowered["main"])
        kernels = tvm.IRModule(
            {gvar: func for gvar, func in lowered.functions_items()
             if isinstance(func, tvm.tirx.PrimFunc) and gvar.name_hint in called}
        )
        library = tvm.tirx.build(kernels, target=target)
    return lowered, library, recorder.plan(), checks


def checks_indices(mod) -> bool:
    """Whether the module holds run-time index checks (onnx_ops/indexing.py's `check_indices` kernels)."""
    return any(gvar.name_hint.startswith("check_indices") for gvar in mod.get_global_vars())


def _called_kernels(main) -> set[str]:
    import tvm

    names: set[str] = set()

    def visit(expr) -> None:
        if isinstance(expr, tvm.ir.expr.Call) and isinstance(expr.op, tvm.ir.expr.GlobalVar):
            names.add(expr.op.name_hint)

    tvm.relax.analysis.post_order_visit(main, visit)
    return names


def export_aot_bundle(
    artifact: "Artifact", bundle: str | os.PathLike, name: str | None = None, budgets: "Budgets | None" = None,
    board: "McuBoard | None" = None, checks: bool = False,
) -> AotBundleSummary:
    """Write the AOT bundle of `artifact` to `bundle` (replaced atomically; nothing is left on failure).
    `budgets`: RAM is checked against the arena (the stack is only known when the program runs), flash
    against Footprint.flash_bytes; over budget raises TvmcompressError and writes nothing.
    `board`: a microcontroller (targets/mcu_boards.py) to build for instead of the artifact's own target; the
    bundle then also holds firmware/ (start-up code, linker script, a main that runs the model once).
    `checks`: keep the kernels' run-time assertions (see lower_for_aot)."""
    from .. import deploy

    bundle = os.fspath(bundle)
    if name is not None and deploy.sanitize_name(name) != name:
        raise TvmcompressError(f"bad --name '{name}': use a C identifier such as {deploy.sanitize_name(name)}")
    name = name or deploy.default_name(artifact)
    if os.path.isdir(bundle) and os.listdir(bundle) and not os.path.isfile(os.path.join(bundle, deploy.BUNDLE_JSON)):
        raise TvmcompressError(f"'{bundle}' exists and is not an export bundle: choose another -o path or remove it")
    if artifact.manifest.get("separate_weights"):
        raise TvmcompressError("export --aot embeds the weights as const data: compile without --separate-weights")
    if not os.path.isfile(os.path.join(artifact.directory, RELAX_MODULE_NAME)):
        raise TvmcompressError(
            f"artifact '{artifact.directory}' has no {RELAX_MODULE_NAME} (compiled by an older tvmcompress): "
            "recompile it, then export --aot"
        )
    preset = board.preset() if board is not None else deploy._artifact_preset(artifact)
    log.info("exporting %s as the AOT bundle '%s' for %s", artifact.directory, name, preset.name)
    # `checks` comes back as what the kernels do (on for a model that checks its indices): bundle.json records it.
    lowered, library, plan, checks = lower_for_aot(artifact, preset, use_tuning=board is None, checks=checks)
    program = extract_program(lowered, plan.workspace_bytes if plan is not None else 0)
    if budgets is not None:
        check_ram_budget(program, budgets)  # before compiling anything: the arena is known now
    with ArtifactWriter(bundle) as writer, tempfile.TemporaryDirectory(prefix="tvmcompress-aot-") as tmp:
        root, work = Path(writer.tmpdir), Path(tmp)
        header = deploy._header_values(artifact, preset, name, False)
        deploy._write_template("aot_model.h.in", root / deploy.HEADER_NAME,
                               {**header, "arena_bytes": str(program.arena_bytes)})
        objects = build_objects(program, library, preset, name, root, work, board)
        footprint = measure(objects, preset, program, plan.peak_activation_bytes if plan is not None else None)
        if budgets is not None:
            check_flash_budget(footprint, budgets)
        archive(preset, name, list(objects.values()), root / f"lib{name}.a", work)
        if board is None:
            deploy._write_template("main.c.in", root / "main.c", deploy._name_values(name))
            deploy._write_template("aot_CMakeLists.txt.in", root / "CMakeLists.txt", deploy._name_values(name))
            (root / "cmake").mkdir()
            deploy._write_template("toolchain.cmake.in", root / "cmake" / "toolchain.cmake",
                                   deploy._toolchain_values(preset, name))
        else:
            from ..deploy import _byte_size
            from .firmware import measure_firmware, write_firmware

            write_firmware(root, board, name, artifact, program)
            # The stack is only known by running: once on zeros, under qemu, with the painted-stack probe.
            measured = measure_firmware(root, board, name, sum(_byte_size(s) for s in artifact.inputs), work)
            footprint = dataclasses.replace(footprint, **{k: v for k, v in measured.items()
                                                          if k in Footprint.__dataclass_fields__})
        files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
        write_json(
            str(root / deploy.BUNDLE_JSON),
            {
                "schema_version": deploy.BUNDLE_SCHEMA_VERSION,
                "tvmcompress": __version__,
                "name": name,
                "target": ({key: artifact.target[key] for key in ("preset", "arch", "json")} if board is None else
                           {"preset": board.name, "arch": "cortex-m", "json": board.tvm_target}),
                "board": None if board is None else {"name": board.name, "qemu_machine": board.qemu_machine,
                                                     "gcc_flags": list(board.gcc_flags)},
                "static": True,
                "aot": True,
                "separate_weights": False,
                "kernel_checks": checks,
                "system_lib_prefix": None,
                "inputs": [spec.to_json() for spec in artifact.inputs],
                "outputs": [spec.to_json() for spec in artifact.outputs],
                "files": files,
                "footprint": footprint.to_json(),
                "link": {"static_libraries": [f"lib{name}.a"], "runtime_libraries": [],
                         "system_libraries": ["m"], "linker_language": "C"},
            },
        )
        files[deploy.BUNDLE_JSON] = (root / deploy.BUNDLE_JSON).stat().st_size
    log.info("wrote AOT bundle %s: %s", bundle, footprint.to_json())
    return AotBundleSummary(os.path.abspath(bundle), name, preset.name, True, False,
                            dict(sorted(files.items())), footprint.to_json())


# ---- objects -------------------------------------------------------------------------------------------------


def c_compiler(preset: "TargetPreset") -> str:
    from ..deploy import _binutils_prefix

    return _binutils_prefix(preset) + "gcc"


def c_flags(board: "McuBoard | None") -> list[str]:
    """Flags for our C files: position independent for hosted targets, the board's core and float ABI for a
    microcontroller (optimized for size there); each function in its own section so that a firmware link
    with --gc-sections drops what it does not call (create/destroy when it has no heap)."""
    common = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-g0", "-ffunction-sections", "-fdata-sections",
              "-fno-common"]
    if board is None:
        return [*common, "-O2", "-fPIC"]
    return [*common, "-Os", *board.gcc_flags]


def build_objects(program: AotProgram, library, preset: "TargetPreset", name: str, root: Path,
                  work: Path, board: "McuBoard | None" = None) -> dict[str, Path]:
    """Compile kernels, runtime, program tables and weights for the target: {role: object file}."""
    from ..deploy import _run

    kernels = work / "kernels.o"
    library.write_to_file(str(kernels))
    check_kernel_symbols(kernels, preset)
    shutil.copyfile(TEMPLATES / "aot_runtime.h", work / "aot_runtime.h")
    blob, offsets = weights_blob(program)
    (work / "weights.bin").write_bytes(blob)
    # .incbin keeps megabytes of weights out of the C compiler; the section is plain const data.
    (work / "weights.S").write_text(
        f'  .section .rodata.tvmc_{name}_weights,"a"\n  .balign 64\n  .global tvmc_{name}_weights\n'
        f'tvmc_{name}_weights:\n  .incbin "{work / "weights.bin"}"\n'
        # Without this note GNU ld marks the program's stack executable.
        '  .section .note.GNU-stack,"",%progbits\n'
    )
    write_program_c(program, offsets, name, work / "model_aot.c")
    sources = {"runtime": TEMPLATES / "aot_runtime.c", "api": work / "model_aot.c", "weights": work / "weights.S"}
    objects = {"kernels": kernels}
    for role, source in sources.items():
        objects[role] = work / f"{role}.o"
        flags = c_flags(board) if source.suffix == ".c" else list(board.gcc_flags if board else [])
        _run([c_compiler(preset), *flags, "-I", str(root), "-I", str(work), "-c", str(source), "-o",
              str(objects[role])], f"compiling {source.name} for {preset.name}")
    return objects


def check_kernel_symbols(kernels: Path, preset: "TargetPreset") -> None:
    """The kernels must need nothing from TVM's runtime beyond what aot_runtime.c provides (an extern call
    such as a BLAS library or a packed function looked up at run time has no AOT form)."""
    from ..deploy import _tool

    listing = subprocess.run([_tool(preset, "nm"), "-u", str(kernels)], capture_output=True, text=True, check=True)
    missing = sorted(
        symbol for symbol in (line.split()[-1] for line in listing.stdout.splitlines() if line.strip())
        if "TVM" in symbol and symbol.lstrip("_") not in _PROVIDED
    )
    if missing:
        raise TvmcompressError(
            f"the model's kernels call the TVM runtime ({', '.join(missing)}), which the AOT executor does not "
            "provide: export without --aot"
        )


def weights_blob(program: AotProgram) -> tuple[bytes, list[int]]:
    """All consts, little-endian, each at a WEIGHT_ALIGN boundary: (blob, offset of each)."""
    parts, offsets, offset = [], [], 0
    for array in program.consts:
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        offsets.append(offset)
        pad = -len(data) % WEIGHT_ALIGN
        parts.append(data + b"\0" * pad)
        offset += len(data) + pad
    return b"".join(parts), offsets


def write_program_c(program: AotProgram, offsets: list[int], name: str, path: Path) -> None:
    from ..deploy import _name_values, _write_template

    kernels = sorted({call.kernel for call in program.calls})
    decls = "\n".join(f"int32_t __tvm_ffi_{k}(void* self, void* args, int32_t num_args, void* result);"
                      for k in kernels)
    lines = []
    for index, tensor in enumerate(program.tensors):
        dims = ", ".join(f"{d}" for d in tensor.shape) or "1"
        lines.append(f"static const int64_t tvmc_shape{index}[] = {{{dims}}};")
    kinds = {"input": "TVMC_AOT_INPUT", "arena": "TVMC_AOT_ARENA", "const": "TVMC_AOT_CONST"}
    rows = []
    for index, tensor in enumerate(program.tensors):
        code, bits = dlpack_dtype(tensor.dtype)
        rows.append(f"    {{tvmc_shape{index}, {tensor.where}u, {kinds[tensor.kind]}, {len(tensor.shape)}, {code}, {bits}}},")
    lines.append("static const tvmc_aot_tensor tvmc_tensors[] = {\n" + "\n".join(rows) + "\n};")
    args, calls = [], []
    for call in program.calls:
        calls.append(f'    {{__tvm_ffi_{call.kernel}, "{call.kernel}", {len(args)}, {len(call.args)}}},')
        args.extend(call.args)
    if any(len(call.args) > 32 for call in program.calls):
        raise TvmcompressError("a kernel of this model takes more than 32 tensors: export without --aot")
    lines.append("static const uint16_t tvmc_call_args[] = {" + ", ".join(map(str, args or [0])) + "};")
    lines.append("static const tvmc_aot_call tvmc_calls[] = {\n" + "\n".join(calls) + "\n};")
    consts = ", ".join(f"tvmc_{name}_weights + {offset}" for offset in offsets) or "NULL"
    lines.append(f"static const void* const tvmc_consts[] = {{{consts}}};")
    lines.append("static const uint16_t tvmc_outputs[] = {" + ", ".join(map(str, program.outputs)) + "};")
    sizes = ", ".join(f"{program.tensors[i].nbytes}u" for i in program.outputs)
    lines.append(f"static const uint32_t tvmc_output_bytes[] = {{{sizes}}};")
    values = {
        **_name_values(name), "version": __version__, "kernel_decls": decls, "tables": "\n".join(lines),
        "num_calls": str(len(program.calls)), "num_outputs": str(len(program.outputs)),
        "arena_bytes": str(program.arena_bytes), "workspace_offset": str(program.workspace_offset),
        "workspace_bytes": str(program.workspace_bytes),
    }
    _write_template("aot_model.c.in", path, values)


def archive(preset: "TargetPreset", name: str, objects: list[Path], output: Path, work: Path) -> None:
    """One relocatable object -> lib<name>.a, with every symbol but the C API (<name>_*) made local: the
    kernels' and the runtime's names are the same in every model, so two models in one program must not
    see each other's."""
    from ..deploy import _run, _tool

    merged = work / f"{name}.o"
    _run([_tool(preset, "ld"), "-r", "-o", str(merged), *map(str, objects)], f"merging the objects of {name}")
    _run([_tool(preset, "objcopy"), "--wildcard", f"--keep-global-symbol={name}_*", str(merged)],
         f"localizing the symbols of {name}")
    _run([_tool(preset, "ar"), "rcsD", str(output), str(merged)], f"archiving lib{name}.a")


# ---- footprint -----------------------------------------------------------------------------------------------


def section_sizes(obj: Path, preset: "TargetPreset") -> dict[str, int]:
    """{section name: bytes} of an object file's allocated sections (`size -A`)."""
    from ..deploy import _tool

    out = subprocess.run([_tool(preset, "size"), "-A", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = sizes.get(parts[0], 0) + int(parts[1])
    return sizes


def _sum(sizes: dict[str, int], prefixes: tuple[str, ...]) -> int:
    return sum(size for section, size in sizes.items() if section.startswith(prefixes))


def measure(objects: dict[str, Path], preset: "TargetPreset", program: AotProgram,
            peak_activation_bytes: int | None) -> Footprint:
    code = (".text",)
    rodata = (".rodata", ".data.rel.ro")
    kernels = section_sizes(objects["kernels"], preset)
    api = section_sizes(objects["api"], preset)
    return Footprint(
        shim_code_bytes=_sum(section_sizes(objects["runtime"], preset), code),
        api_code_bytes=_sum(api, code),
        kernel_code_bytes=_sum(kernels, code),
        kernel_rodata_bytes=_sum(kernels, rodata),
        tables_bytes=_sum(api, rodata),
        weights_bytes=_sum(section_sizes(objects["weights"], preset), (".rodata",)),
        arena_bytes=program.arena_bytes,
        peak_activation_bytes=peak_activation_bytes,
    )


def check_ram_budget(program: AotProgram, budgets: "Budgets") -> None:
    if budgets.max_ram_bytes is not None and program.arena_bytes > budgets.max_ram_bytes:
        kernel, live = program.peak_call()
        raise TvmcompressError(
            f"the AOT arena needs {program.arena_bytes:,} B, over --max-ram {budgets.max_ram_bytes:,} B; the layer "
            f"that peaks is {kernel} (its tensors take {live:,} B): shrink the model or its input"
        )


def check_flash_budget(footprint: Footprint, budgets: "Budgets") -> None:
    if budgets.max_flash_bytes is not None and footprint.flash_bytes > budgets.max_flash_bytes:
        raise TvmcompressError(
            f"the AOT build needs {footprint.flash_bytes:,} B of flash (code {footprint.kernel_code_bytes:,}, weights "
            f"{footprint.weights_bytes:,}), over --max-flash {budgets.max_flash_bytes:,} B: quantize (--int8) or prune"
        )


def read_aot_bundle(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The bundle.json of an AOT bundle in `directory`, or None when it is not one."""
    path = os.path.join(directory, "bundle.json")
    if not os.path.isfile(path):
        return None
    import json

    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    return info if info.get("aot") else None


def format_aot_bundle(info: dict[str, Any]) -> str:
    fp = info["footprint"]
    rows = [
        ("runtime shim code", fp["shim_code_bytes"]), ("C API code", fp["api_code_bytes"]),
        ("kernel code", fp["kernel_code_bytes"]), ("kernel read-only data", fp["kernel_rodata_bytes"]),
        ("program tables", fp["tables_bytes"]), ("const weights", fp["weights_bytes"]),
    ]
    lines = [f"AOT bundle '{info['name']}' for {info['target']['preset']}", "flash:"]
    lines += [f"  {label:<24} {value:>10,} B" for label, value in rows]
    lines.append(f"  {'total':<24} {fp['flash_bytes']:>10,} B")
    lines.append("RAM:")
    lines.append(f"  {'arena':<24} {fp['arena_bytes']:>10,} B (memory plan: {fp['peak_activation_bytes']:,} B)")
    if fp.get("stack_bytes") is not None:
        lines.append(f"  {'stack (high-water)':<24} {fp['stack_bytes']:>10,} B (measured under qemu)")
        lines.append(f"firmware: flash {fp['firmware_flash_bytes']:,} B, static RAM "
                     f"{fp['firmware_static_ram_bytes']:,} B + stack {fp['stack_bytes']:,} B")
    else:
        lines.append("  stack                    not measured (a hosted bundle; measured for --board firmware)")
    return "\n".join(lines)


def summary_line(summary: AotBundleSummary) -> str:
    fp = summary.footprint
    return (f"wrote {summary.bundle}: AOT bundle '{summary.name}' for {summary.target}; flash {fp['flash_bytes']:,} B "
            f"(runtime {fp['shim_code_bytes']:,}, kernels {fp['kernel_code_bytes'] + fp['kernel_rodata_bytes']:,}, "
            f"weights {fp['weights_bytes']:,}), arena {fp['arena_bytes']:,} B")


__all__ = ["AotBundleSummary", "Footprint", "export_aot_bundle"]
