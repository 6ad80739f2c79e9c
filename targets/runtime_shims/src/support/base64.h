/*
 * tvmcompress runtime shim: src/support/base64.h (included as "../support/base64.h" by the TVM
 * runtime sources shipped in the apache-tvm wheel, which does not ship this header).
 *
 * Base64 streams over another Stream, used by tensor.cc to put a tensor into JSON. The runtime only
 * needs them for that (rare) path, so they buffer: Base64OutStream encodes everything at Finish();
 * Base64InStream decodes the whole underlying stream at InitPosition(). The coding itself is
 * tvm-ffi's own Base64Encode/Base64Decode (a shipped header).
 */
#ifndef TVMCOMPRESS_SHIM_SUPPORT_BASE64_H_
#define TVMCOMPRESS_SHIM_SUPPORT_BASE64_H_

#include <tvm/ffi/extra/base64.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Read(void*, size_t) final { return 0; }  // write-only

  size_t Write(const void* ptr, size_t size) final {
    pending_.append(static_cast<const char*>(ptr), size);
    return size;
  }

  // Encodes what was written and passes it on; call once, after the last Write.
  void Finish() {
    ffi::String encoded = ffi::Base64Encode(ffi::Bytes(pending_));
    sink_->Write(static_cast<const void*>(encoded.data()), encoded.size());
    pending_.clear();
  }

 private:
  Stream* sink_;
  std::string pending_;
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  // Reads the source to its end and decodes it; call once, before the first Read.
  void InitPosition() {
    std::string text;
    char chunk[4096];
    for (size_t got; (got = source_->Read(static_cast<void*>(chunk), sizeof(chunk))) != 0;) {
      text.append(chunk, got);
    }
    // Whitespace (JSON pretty-printing) is not part of the encoding.
    text.erase(std::remove_if(text.begin(), text.end(),
                              [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }),
               text.end());
    ffi::Bytes bytes = ffi::Base64Decode(ffi::String(text));
    decoded_.assign(bytes.data(), bytes.size());
    offset_ = 0;
  }

  size_t Read(void* ptr, size_t size) final {
    size_t count = std::min(size, decoded_.size() - offset_);
    if (count != 0) std::memcpy(ptr, decoded_.data() + offset_, count);
    offset_ += count;
    return count;
  }

  size_t Write(const void*, size_t) final { return 0; }  // read-only

 private:
  Stream* source_;
  std::string decoded_;
  size_t offset_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_SUPPORT_BASE64_H_
