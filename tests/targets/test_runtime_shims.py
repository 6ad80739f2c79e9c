"""The headers in targets/runtime_shims/, compiled natively with the host g++ and checked against numpy/struct.

The armv7/riscv64 runtime is built with these headers, so two things must hold exactly: the half-precision
conversions round like IEEE (numpy is the reference), and the stream serializer reads and writes the byte
layout that the x86 TVM compiler puts into model.so. (The end-to-end armv7 tests in test_qemu.py check the
latter on real executables; these tests pin it down without qemu.)
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tvmcompress.targets import runtime_source_build

SHIMS = runtime_source_build.SHIMS_DIR

FP16_PROGRAM = r"""
#include <builtin_fp16.h>
#include <cstdint>
#include <cstdio>
int main(int argc, char** argv) {
  FILE* in = std::fopen(argv[1], "rb");
  FILE* out = std::fopen(argv[2], "wb");
  char mode = argv[3][0];
  if (mode == 'e') {
    uint16_t h;
    while (std::fread(&h, 2, 1, in) == 1) {
      float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(h);
      std::fwrite(&f, 4, 1, out);
    }
  } else if (mode == 'f') {
    float f;
    while (std::fread(&f, 4, 1, in) == 1) {
      uint16_t h = __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f);
      std::fwrite(&h, 2, 1, out);
    }
  } else {
    double d;
    while (std::fread(&d, 8, 1, in) == 1) {
      uint16_t h = __truncXfYf2__<double, uint64_t, 52, uint16_t, uint16_t, 10>(d);
      std::fwrite(&h, 2, 1, out);
    }
  }
  std::fclose(out);
  return 0;
}
"""

STREAM_PROGRAM = r"""
#include <tvm/support/io.h>
#include <tvm/support/serializer.h>
#include <tvm/support/cuda/nvtx.h>
#include "support/base64.h"
#include "support/bytes_io.h"
#include "support/utils.h"
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

enum class Kind : int32_t { kA = 7 };

int main() {
  using namespace tvm;
  std::string bytes;
  support::BytesOutStream out(&bytes);
  out.Write(uint64_t{0x1122334455667788ULL});
  out.Write(int32_t{-2});
  out.Write(std::string("abc"));
  out.Write(std::vector<int64_t>{5, -6});
  out.Write(std::vector<std::string>{"x", ""});
  out.Write(DLDataType{kDLFloat, 16, 4});
  out.Write(DLDevice{kDLCPU, 3});
  out.Write(Kind::kA);
  out.Write(ffi::Array<ffi::String>{"hi"});
  out.Write(std::pair<int32_t, std::string>{1, "p"});
  out.Write(std::unordered_map<int64_t, std::string>{{9, "m"}});
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);

  // Read everything back and fail loudly on any difference.
  support::BytesInStream in(bytes);
  uint64_t u; int32_t i; std::string s; std::vector<int64_t> v; std::vector<std::string> vs;
  DLDataType t; DLDevice d; Kind k; ffi::Array<ffi::String> a; std::pair<int32_t, std::string> p;
  std::unordered_map<int64_t, std::string> m;
  bool ok = in.Read(&u) && in.Read(&i) && in.Read(&s) && in.Read(&v) && in.Read(&vs) && in.Read(&t) &&
            in.Read(&d) && in.Read(&k) && in.Read(&a) && in.Read(&p) && in.Read(&m);
  ok = ok && u == 0x1122334455667788ULL && i == -2 && s == "abc" && v == std::vector<int64_t>{5, -6} &&
       vs.size() == 2 && vs[0] == "x" && vs[1].empty() && t.code == kDLFloat && t.bits == 16 && t.lanes == 4 &&
       d.device_type == kDLCPU && d.device_id == 3 && k == Kind::kA && a.size() == 1 && a[0] == "hi" &&
       p.first == 1 && p.second == "p" && m.size() == 1 && m[9] == "m";
  uint8_t extra;
  ok = ok && !in.Read(&extra);  // exhausted

  std::string b64;
  support::BytesOutStream b64_sink(&b64);
  support::Base64OutStream encoder(&b64_sink);
  encoder.Write(std::string("tensor bytes \x01\x02"));
  encoder.Finish();
  support::BytesInStream b64_source(b64);
  support::Base64InStream decoder(&b64_source);
  decoder.InitPosition();
  std::string decoded;
  ok = ok && decoder.Read(&decoded) && decoded == "tensor bytes \x01\x02";

  ok = ok && support::IsNumber("12") && !support::IsNumber("") && !support::IsNumber("1a");
  support::NVTXScopedRange range("no-op");
  return ok ? 0 : 1;
}
"""


def _host_compile(tmp_path: Path, source: str, extra: list[str]) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = tmp_path / "prog.cc"
    src.write_text(source)
    exe = tmp_path / "prog"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", str(src), "-o", str(exe), *extra], check=True)
    return exe


def test_fp16_conversions_are_bit_exact(tmp_path):
    exe = _host_compile(tmp_path, FP16_PROGRAM, [f"-I{SHIMS / '3rdparty' / 'compiler-rt'}"])

    # half -> float: every one of the 65536 bit patterns.
    halves = np.arange(1 << 16, dtype=np.uint16)
    halves.tofile(tmp_path / "h.bin")
    subprocess.run([exe, tmp_path / "h.bin", tmp_path / "f.bin", "e"], check=True)
    got = np.fromfile(tmp_path / "f.bin", np.float32)
    want = halves.view(np.float16).astype(np.float32)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all()

    # float -> half: random bit patterns, the whole half range densely, every exact tie between two
    # neighbouring halves (round to even), and the overflow / underflow / NaN edges.
    rng = np.random.default_rng(0)
    dense = np.arange(0x33000000, 0x47800000, 211, dtype=np.uint32)
    finite = want[np.isfinite(want) & (want >= 0)].astype(np.float64)
    finite.sort()
    ties = ((finite[:-1] + finite[1:]) / 2).astype(np.float32).view(np.uint32)
    edges = np.array([0x7F800000, 0x7FC00000, 0x7F800001, 0x477FE000, 0x477FF000, 0x477FEFFF, 0x33000000,
                      0x33000001, 0x32FFFFFF, 0x00000001, 0x80000000], dtype=np.uint32)
    bits = np.concatenate([rng.integers(0, 1 << 32, 1_000_000, dtype=np.uint64).astype(np.uint32),
                           dense, dense | 0x80000000, ties, ties | 0x80000000, edges])
    floats = bits.view(np.float32)
    floats.tofile(tmp_path / "x.bin")
    subprocess.run([exe, tmp_path / "x.bin", tmp_path / "y.bin", "f"], check=True)
    got = np.fromfile(tmp_path / "y.bin", np.uint16)
    with np.errstate(all="ignore"):
        want = floats.astype(np.float16)
    same = (got == want.view(np.uint16)) | (np.isnan(floats) & np.isnan(got.view(np.float16)))
    assert same.all(), [hex(b) for b in bits[~same][:5]]

    # double -> half.
    with np.errstate(invalid="ignore"):  # signalling NaNs among the float patterns
        widened = floats.astype(np.float64)
    doubles = np.concatenate([widened, rng.standard_normal(200_000) * 1e3, rng.standard_normal(200_000) * 1e-6])
    doubles.tofile(tmp_path / "d.bin")
    subprocess.run([exe, tmp_path / "d.bin", tmp_path / "z.bin", "d"], check=True)
    got = np.fromfile(tmp_path / "z.bin", np.uint16)
    with np.errstate(all="ignore"):
        want = doubles.astype(np.float16)
    same = (got == want.view(np.uint16)) | (np.isnan(doubles) & np.isnan(got.view(np.float16)))
    assert same.all()


def test_stream_serializer_byte_layout(tmp_path):
    ffi_root = runtime_source_build.package_dir("tvm_ffi")
    exe = _host_compile(
        tmp_path, STREAM_PROGRAM,
        [f"-I{SHIMS / 'include'}", f"-I{SHIMS / 'src'}", f"-I{ffi_root / 'include'}",
         f"-I{ffi_root / '3rdparty' / 'dlpack' / 'include'}", f"-L{ffi_root / 'lib'}", "-ltvm_ffi",
         f"-Wl,-rpath,{ffi_root / 'lib'}"],
    )
    result = subprocess.run([exe], capture_output=True, check=False)
    assert result.returncode == 0, "read-back through the shim streams did not reproduce the values"

    def string(text: bytes) -> bytes:
        return struct.pack("<Q", len(text)) + text

    expected = b"".join([
        struct.pack("<Q", 0x1122334455667788), struct.pack("<i", -2), string(b"abc"),
        struct.pack("<Qqq", 2, 5, -6), struct.pack("<Q", 2) + string(b"x") + string(b""),
        struct.pack("<BBH", 2, 16, 4),  # kDLFloat = 2
        struct.pack("<ii", 1, 3),  # kDLCPU = 1
        struct.pack("<i", 7), struct.pack("<Q", 1) + string(b"hi"), struct.pack("<i", 1) + string(b"p"),
        struct.pack("<Qq", 1, 9) + string(b"m"),
    ])
    assert result.stdout == expected
