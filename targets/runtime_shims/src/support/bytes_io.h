/*
 * tvmcompress runtime shim: src/support/bytes_io.h (included as "../support/bytes_io.h" by the TVM
 * runtime sources shipped in the apache-tvm wheel, which does not ship this header).
 *
 * In-memory streams: BytesInStream reads a byte buffer front to back; BytesOutStream appends to a
 * std::string. These carry the serialized VM executable, constants and parameters.
 */
#ifndef TVMCOMPRESS_SHIM_SUPPORT_BYTES_IO_H_
#define TVMCOMPRESS_SHIM_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  // The buffer must outlive the stream (every caller reads a local or a parameter). An ffi::Bytes is
  // also held by reference count, so that case is safe regardless.
  explicit BytesInStream(const std::string& buffer) : data_(buffer.data()), size_(buffer.size()) {}
  explicit BytesInStream(const ffi::Bytes& buffer)
      : owner_(buffer), data_(owner_.data()), size_(owner_.size()) {}
  BytesInStream(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}

  size_t Read(void* ptr, size_t size) final {
    size_t count = std::min(size, size_ - offset_);
    if (count != 0) std::memcpy(ptr, data_ + offset_, count);
    offset_ += count;
    return count;
  }

  size_t Write(const void*, size_t) final { return 0; }  // read-only

 private:
  ffi::Bytes owner_;
  const char* data_;
  size_t size_;
  size_t offset_ = 0;
};

class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* sink) : sink_(sink) {}

  size_t Read(void*, size_t) final { return 0; }  // write-only

  size_t Write(const void* ptr, size_t size) final {
    sink_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* sink_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_SUPPORT_BYTES_IO_H_
