/*
 * tvmcompress runtime shim: <tvm/support/cuda/nvtx.h>.
 *
 * The shipped VM sources mark ranges for NVIDIA's profiler. The runtimes tvmcompress rebuilds are
 * CPU-only, so the range is a no-op that only keeps the sources compiling.
 */
#ifndef TVMCOMPRESS_SHIM_TVM_SUPPORT_CUDA_NVTX_H_
#define TVMCOMPRESS_SHIM_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_TVM_SUPPORT_CUDA_NVTX_H_
