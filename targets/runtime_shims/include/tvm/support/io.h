/*
 * tvmcompress runtime shim: <tvm/support/io.h>.
 *
 * The TVM runtime sources shipped inside the apache-tvm wheel include this header but the wheel does
 * not ship it. tvmcompress writes its own minimal version so that the runtime can be rebuilt for
 * architectures without a wheel (armv7, riscv64). It declares exactly what those sources use:
 *
 *   - Serializer<T, Enable>: the customization point; the sources specialize it for their own types
 *     with `enabled`, `Write(Stream*, const T&)` and `Read(Stream*, T*)`;
 *   - Stream: an abstract byte stream with typed Write/Read/WriteArray/ReadArray helpers that
 *     dispatch to Serializer<T>.
 *
 * The encodings themselves live in serializer.h.
 */
#ifndef TVMCOMPRESS_SHIM_TVM_SUPPORT_IO_H_
#define TVMCOMPRESS_SHIM_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Not serializable unless specialized (serializer.h has the built-in encodings).
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // Raw bytes. Both return the number of bytes actually transferred.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialized for this type");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialized for this type");
    return Serializer<T>::Read(this, value);
  }

  // Element-wise, without a length prefix (the caller stores the count).
  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write<T>(values[i]);
  }

  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_TVM_SUPPORT_IO_H_
