"""Embed nvcc-compiled device code (a fatbin) in CUDA libraries, so the device needs no CUDA compiler.

Why this file exists: TVM 0.27 codegen for a `cuda` target hands the kernels' CUDA C++ *source* to
`CUDAModuleCreateWithFallback` (src/backend/cuda/codegen/cuda_fallback_module.h). Without the CUDA runtime
sidecar (no libcuda here) that gives a `CUDAFallbackModuleNode` whose `SaveToBytes` writes
`[fmt="cuda"][fmap][source]`; a CUDA-enabled runtime then has to compile that source at load time through the
Python hook `tvm_callback_cuda_compile` (`CUDAModuleCreateImpl` in src/backend/cuda/runtime/cuda_module.cc).
A device without Python or a CUDA compiler cannot load such a library.

`CUDAModuleLoadFromBytes` (the `ffi.Module.load_from_bytes.cuda` loader) reads `[fmt][fmap][code]` and only
JIT-compiles when `fmt == "cuda"`; any other fmt keeps `code` as-is and later hands it to `cuModuleLoadData`,
which takes a fatbin, a cubin or PTX. So we compile the source with nvcc ourselves and rewrite that one entry of
the packed-imports blob (`__tvm_ffi__library_bin`, read by tvm-ffi's `ProcessLibraryBin`) to
`[fmt="fatbin"][same fmap][fatbin]`. The rewritten blob is turned into an object file by the same
`codegen.codegen_blob` that `export_library` uses, through its `fpack_imports` hook. Every other blob entry
(`_lib`, the VM executable) is copied byte for byte.

Blob layout (tvm-ffi src/ffi/extra/library_module.cc, TVM src/target/codegen.cc), all integers little-endian:
    <nbytes: u64> <indptr: vec<u64>> <child_indices: vec<u64>> { <kind: str> [<payload: str> unless kind=="_lib"] }*
    vec<u64> = <n: u64> <n x u64>;  str = <len: u64> <bytes>
CUDA payload (TVM include/tvm/support/serializer.h, src/runtime/metadata.h):
    <fmt: str> <fmap: u64 n, n x (<key: str> <FunctionInfo>)> <code: str>
    FunctionInfo = <name: str> <arg_types: u64 n, n x (u8 code, u8 bits, u16 lanes)>
                   <launch_param_tags: u64 n, n x str> <arg_extra_tags: u64 n, n x i32>

All TVM-version-specific knowledge about CUDA artifacts lives in this file.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm

from tvmcompress.errors import TvmcompressError

_NVCC_MISSING = "nvcc not found: install the CUDA toolkit (Debian package nvidia-cuda-toolkit) or put nvcc on PATH"
# The symbol that tvm-ffi's library loader looks up in model.so (ffi::symbol::tvm_ffi_library_bin).
_LIBRARY_BIN_SYMBOL = "__tvm_ffi__library_bin"
_CUDA_KIND = "cuda"
_ARCH_PATTERN = re.compile(r"sm_(\d+)([af]?)")

# The flags TVM's own nvcc path uses (tvm/support/nvcc.py `_compile_cuda_nvcc`), minus `--use_fast_math`: the
# default runtime JIT (NVRTC) compiles without fast math, so leaving it out keeps the numerics of a
# JIT-compiled library. The half/bfloat16 -U flags let the generated code use the operators in cuda_fp16.h.
_NVCC_FLAGS = (
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
)


# ---------------------------------------------------------------------------------------------------------------
# Public API


class FatbinExecutable:
    """A CUDA executable whose `export_library` embeds compiled device code instead of CUDA source.

    Made by `embed_device_code`. `executable` is the untouched result of `tvm.compile`.
    """

    def __init__(self, executable: Any, arch: str, packed_imports: bytes):
        self.executable = executable
        self.arch = arch
        self._packed_imports = packed_imports  # the rewritten blob, <nbytes: u64> header included

    def export_library(
        self,
        file_name: str | os.PathLike,
        *,
        fcompile: Any = None,
        addons: list[str] | None = None,
        workspace_dir: str | None = None,
        options: list[str] | None = None,
    ) -> Any:
        """Write the shared library, as `Executable.export_library` does, with the fatbin blob in it."""
        extra = {} if options is None else {"options": list(options)}
        return self.executable.export_library(
            str(file_name),
            fcompile=fcompile,
            addons=addons,
            workspace_dir=workspace_dir,
            fpack_imports=self._write_packed_imports,
            **extra,
        )

    def _write_packed_imports(self, mod: Any, is_system_lib: bool, symbol_prefix: str, workspace_dir: str) -> str:
        # Called by tvm.runtime.Module.export_library in place of ModulePackImportsToLLVM/ToC.
        if not mod.same_as(_root_module(self.executable)):
            raise RuntimeError("FatbinExecutable can only export the executable it was made from")
        llvm_target = _find_llvm_target(mod)
        if llvm_target is not None and tvm.get_global_func("codegen.codegen_blob", allow_missing=True) is not None:
            path = os.path.join(workspace_dir, f"{symbol_prefix}devc.o")
            codegen_blob = tvm.get_global_func("codegen.codegen_blob")
            codegen_blob(self._packed_imports, is_system_lib, llvm_target, symbol_prefix).write_to_file(path)
            return path
        path = os.path.join(workspace_dir, f"{symbol_prefix}devc.c")
        Path(path).write_text(_packed_imports_to_c(self._packed_imports, is_system_lib, symbol_prefix))
        return path


def embed_device_code(executable: Any, arch: str, nvcc: str = "nvcc") -> tuple[FatbinExecutable, dict]:
    """Compile each imported CUDA module's source with nvcc and make its serialized form a fatbin.

    `executable` is what `tvm.compile` returned for a CUDA target (or a runtime.Module with CUDA imports). The
    fatbin holds SASS for `arch` and PTX for the same virtual arch, so a newer GPU can still run it through the
    driver's JIT (the driver, not a toolkit).
    Returns the exportable executable and {"kernels", "fatbin_bytes", "arch", "modules"}.
    """
    if _ARCH_PATTERN.fullmatch(arch) is None:
        raise TvmcompressError(f"invalid CUDA arch {arch!r}: use the form sm_80 (or sm_90a)")
    nvcc_path = shutil.which(nvcc)
    if nvcc_path is None:
        raise TvmcompressError(_NVCC_MISSING)

    root = _root_module(executable)
    packed = _parse_packed_imports(_pack_imports(root))
    kernels = fatbin_bytes = modules = 0
    rewritten = []
    for kind, payload in packed.modules:
        if kind != _CUDA_KIND:
            rewritten.append((kind, payload))
            continue
        cuda = _parse_cuda_payload(payload)
        source = cuda.code.decode() if cuda.fmt == "cuda" else _find_cuda_source(root, cuda.kernels)
        fatbin = _compile_fatbin(source, arch, nvcc_path)
        rewritten.append((kind, _serialize_cuda_payload("fatbin", cuda.fmap, fatbin)))
        kernels += len(cuda.kernels)
        fatbin_bytes += len(fatbin)
        modules += 1
    blob = _serialize_packed_imports(_PackedImports(packed.indptr, packed.child_indices, tuple(rewritten)))
    report = {"kernels": kernels, "fatbin_bytes": fatbin_bytes, "arch": arch, "modules": modules}
    return FatbinExecutable(executable, arch, blob), report


def read_embedded_device_code(library_path: str | os.PathLike) -> dict:
    """Describe the modules packed into a library (host libraries of any ELF architecture, little-endian).

    Returns {"modules": [{"kind", "size", ...}]}; "_lib" is the host code itself. A CUDA module adds "fmt",
    "kernels" (names) and, for a fatbin, "fatbin_entries" ([{"kind": "elf"|"ptx", "arch": "sm_80"}, ...]).
    A library with no packed modules gives {"modules": []}.
    """
    blob = _read_library_bin(Path(library_path))
    if blob is None:
        return {"modules": []}
    described = []
    for kind, payload in _parse_packed_imports(blob).modules:
        entry: dict[str, Any] = {"kind": kind, "size": 0 if payload is None else len(payload)}
        if kind == _CUDA_KIND:
            cuda = _parse_cuda_payload(payload)
            entry.update(fmt=cuda.fmt, size=len(cuda.code), kernels=list(cuda.kernels))
            if cuda.fmt == "fatbin":
                entry["fatbin_entries"] = _describe_fatbin(cuda.code)
        described.append(entry)
    return {"modules": described}


def extract_device_code(library_path: str | os.PathLike) -> list[bytes]:
    """The device code (fatbin, cubin, PTX or CUDA source) of each CUDA module in a library, in blob order."""
    blob = _read_library_bin(Path(library_path))
    if blob is None:
        return []
    return [_parse_cuda_payload(p).code for kind, p in _parse_packed_imports(blob).modules if kind == _CUDA_KIND]


# ---------------------------------------------------------------------------------------------------------------
# nvcc


def _compile_fatbin(source: str, arch: str, nvcc_path: str) -> bytes:
    virtual = "compute_" + arch.removeprefix("sm_")
    with tempfile.TemporaryDirectory(prefix="tvmcompress-nvcc-") as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, "kernels.fatbin")
        src.write_text(source)
        cmd = [
            nvcc_path,
            "--fatbin",
            f"--generate-code=arch={virtual},code={arch}",
            f"--generate-code=arch={virtual},code={virtual}",
            *_NVCC_FLAGS,
            "-o",
            str(out),
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = proc.stdout + proc.stderr
            if "Unsupported gpu architecture" in log or "is not defined for option" in log:
                raise TvmcompressError(f"{nvcc_path} cannot compile for {arch}: pick an arch this CUDA toolkit knows")
            raise RuntimeError(f"nvcc failed on TVM-generated CUDA source:\n{' '.join(cmd)}\n{log}")
        fatbin = out.read_bytes()
    if not fatbin:
        raise RuntimeError(f"nvcc produced an empty fatbin for {arch}")
    return fatbin


def _find_cuda_source(root: Any, kernels: tuple[str, ...]) -> str:
    # Only reached on a machine whose TVM has the CUDA runtime: the module was already JIT-compiled and its
    # payload holds a cubin, but the module keeps the source for InspectSource("cuda").
    stack, seen = [root], set()
    while stack:
        mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        if mod.kind == _CUDA_KIND and kernels and mod.implements_function(kernels[0]):
            source = mod.inspect_source("cuda")
            if source:
                return source
        stack.extend(mod.imports)
    raise RuntimeError(f"no CUDA source found for the CUDA module with kernels {list(kernels)[:3]}")


# ---------------------------------------------------------------------------------------------------------------
# The packed-imports blob


@dataclass(frozen=True)
class _PackedImports:
    indptr: tuple[int, ...]
    child_indices: tuple[int, ...]
    modules: tuple[tuple[str, bytes | None], ...]  # (kind, payload); payload is None for "_lib"


@dataclass(frozen=True)
class _CudaPayload:
    fmt: str
    fmap: bytes  # the serialized Map<String, FunctionInfo>, kept byte for byte
    code: bytes
    kernels: tuple[str, ...]


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"truncated {self.what} at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u64())

    def u64_vector(self) -> tuple[int, ...]:
        n = self.u64()
        return struct.unpack(f"<{n}Q", self.take(8 * n))

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def _str(b: bytes) -> bytes:
    return _u64(len(b)) + b


def _pack_imports(mod: Any) -> bytes:
    # Same serializer (ModuleSerializer + PackImportsToBytes) that export_library's default path uses.
    return tvm.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes()


def _parse_packed_imports(blob: bytes) -> _PackedImports:
    (nbytes,) = struct.unpack_from("<Q", blob, 0)
    reader = _Reader(blob[8 : 8 + nbytes], "packed-imports blob")
    indptr = reader.u64_vector()
    child_indices = reader.u64_vector()
    modules = []
    for _ in range(len(indptr) - 1):
        kind = reader.string().decode()
        modules.append((kind, None if kind == "_lib" else reader.string()))
    if not reader.at_end():
        raise ValueError(f"packed-imports blob has {len(reader.data) - reader.pos} trailing bytes")
    return _PackedImports(tuple(indptr), tuple(child_indices), tuple(modules))


def _serialize_packed_imports(packed: _PackedImports) -> bytes:
    parts = [_u64(len(packed.indptr)), *map(_u64, packed.indptr)]
    parts += [_u64(len(packed.child_indices)), *map(_u64, packed.child_indices)]
    for kind, payload in packed.modules:
        parts.append(_str(kind.encode()))
        if payload is not None:
            parts.append(_str(payload))
    body = b"".join(parts)
    return _u64(len(body)) + body


def _parse_cuda_payload(payload: bytes) -> _CudaPayload:
    reader = _Reader(payload, "CUDA module payload")
    fmt = reader.string().decode()
    fmap_start = reader.pos
    kernels = []
    for _ in range(reader.u64()):
        reader.string()  # map key, equal to FunctionInfo.name
        kernels.append(reader.string().decode())
        reader.take(4 * reader.u64())  # arg_types: DLDataType is u8 code, u8 bits, u16 lanes
        for _ in range(reader.u64()):  # launch_param_tags
            reader.string()
        reader.take(4 * reader.u64())  # arg_extra_tags: enum with int32 storage
    fmap = payload[fmap_start : reader.pos]
    code = reader.string()
    if not reader.at_end():
        raise ValueError("CUDA module payload has trailing bytes; is this TVM's [fmt][fmap][code] layout?")
    return _CudaPayload(fmt, fmap, code, tuple(kernels))


def _serialize_cuda_payload(fmt: str, fmap: bytes, code: bytes) -> bytes:
    return _str(fmt.encode()) + fmap + _str(code)


def _packed_imports_to_c(blob: bytes, is_system_lib: bool, symbol_prefix: str) -> str:
    # What runtime.ModulePackImportsToC writes, for hosts without LLVM in TVM.
    name = symbol_prefix + _LIBRARY_BIN_SYMBOL
    rows = (",".join(f"0x{b:02x}" for b in blob[i : i + 20]) for i in range(0, len(blob), 20))
    lines = [
        '#ifdef __cplusplus\nextern "C" {\n#endif',
        f"extern const unsigned char {name}[];",
        f"const unsigned char {name}[{len(blob)}] = {{\n  " + ",\n  ".join(rows) + "\n};",
    ]
    if is_system_lib:
        lines.append("extern int TVMFFIEnvModRegisterSystemLibSymbol(const char*, void*);")
        lines.append(f'static int {name}_reg_ = TVMFFIEnvModRegisterSystemLibSymbol("{name}", (void*){name});')
    lines.append("#ifdef __cplusplus\n}\n#endif\n")
    return "\n".join(lines)


def _root_module(executable: Any) -> Any:
    # tvm.compile returns a relax VMExecutable wrapping the module tree; a bare runtime.Module is its own root.
    return getattr(executable, "mod", executable)


def _find_llvm_target(mod: Any) -> str | None:
    stack = [mod]
    while stack:
        m = stack.pop()
        if m.kind == "llvm":
            return m.get_function("_get_target_string")()
        stack.extend(m.imports)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reading a library back: ELF symbol lookup and the fatbin container


def _read_library_bin(path: Path) -> bytes | None:
    """The bytes of `__tvm_ffi__library_bin` (header included), found through the ELF symbol tables."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        raise TvmcompressError(f"{path} is not an ELF shared library")
    if data[5] != 1:
        raise TvmcompressError(f"{path} is big-endian; only little-endian libraries can be inspected")
    is64 = data[4] == 2
    if is64:
        shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HH", data, 0x3A)
        sec_fmt, sym_fmt, sym_size = "<IIQQQQIIQQ", "<IBBHQQ", 24
    else:
        shoff, shentsize, shnum = struct.unpack_from("<I", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x2E)
        sec_fmt, sym_fmt, sym_size = "<IIIIIIIIII", "<IIIBBH", 16
    sections = [struct.unpack_from(sec_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    # section tuple: name, type, flags, addr, offset, size, link, info, addralign, entsize
    for sh_type in (2, 11):  # SHT_SYMTAB first (unstripped), then SHT_DYNSYM (what dlsym uses)
        for sec in sections:
            if sec[1] != sh_type:
                continue
            strtab = sections[sec[6]]
            for off in range(sec[4], sec[4] + sec[5], sym_size):
                fields = struct.unpack_from(sym_fmt, data, off)
                if is64:
                    st_name, _, _, st_shndx, st_value, st_size = fields
                else:
                    st_name, st_value, st_size, _, _, st_shndx = fields
                name_at = strtab[4] + st_name
                name = data[name_at : data.index(b"\0", name_at)].decode(errors="replace")
                if not name.endswith(_LIBRARY_BIN_SYMBOL) or st_shndx == 0 or st_shndx >= len(sections):
                    continue
                home = sections[st_shndx]
                start = home[4] + st_value - home[3]
                (nbytes,) = struct.unpack_from("<Q", data, start)
                return data[start : start + 8 + nbytes]
    return None


def _describe_fatbin(fatbin: bytes) -> list[dict]:
    """List a fatbin's entries. Layout as produced by nvcc (fatbinary_section.h only documents the wrapper):
    header = u32 magic 0xBA55ED50, u16 version, u16 header size, u64 entries size; each entry starts with
    u16 kind (1 PTX, 2 ELF), u16, u32 header size, u64 payload size, ..., u32 arch at +0x1C."""
    magic, _, header_size, entries_size = struct.unpack_from("<IHHQ", fatbin, 0)
    if magic != 0xBA55ED50:
        raise ValueError("not a CUDA fatbin (bad magic)")
    entries, pos, end = [], header_size, header_size + entries_size
    while pos < end:
        kind, _, entry_header, payload_size = struct.unpack_from("<HHIQ", fatbin, pos)
        (sm,) = struct.unpack_from("<I", fatbin, pos + 0x1C)
        name = {1: "ptx", 2: "elf"}.get(kind, f"kind{kind}")
        entries.append({"kind": name, "arch": f"{'compute' if name == 'ptx' else 'sm'}_{sm}"})
        pos += entry_header + payload_size
    return entries
