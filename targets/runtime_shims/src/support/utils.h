/*
 * tvmcompress runtime shim: src/support/utils.h (included as "../support/utils.h" by the TVM runtime
 * sources shipped in the apache-tvm wheel, which does not ship this header).
 *
 * Only what the CPU runtime sources use: IsNumber, for thread_pool.cc's CPU-id check.
 */
#ifndef TVMCOMPRESS_SHIM_SUPPORT_UTILS_H_
#define TVMCOMPRESS_SHIM_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

// True when `text` is a non-empty run of decimal digits (a CPU id such as "3").
inline bool IsNumber(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_SUPPORT_UTILS_H_
