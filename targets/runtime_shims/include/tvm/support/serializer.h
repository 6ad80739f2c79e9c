/*
 * tvmcompress runtime shim: <tvm/support/serializer.h>.
 *
 * Built-in Serializer<T> encodings used by the TVM runtime sources shipped in the apache-tvm wheel
 * (VM executable, constant loader, static library, parameter and tensor files). The byte layout must
 * match what the x86 TVM compiler writes into model.so, because the runtime rebuilt from these
 * headers reads it back:
 *
 *   arithmetic and enum values  the value's bytes, little-endian
 *   strings                     u64 byte count, then the bytes
 *   sequences                   u64 element count, then each element in order
 *   maps                        u64 entry count, then key, value, key, value, ...
 *   pair                        first, then second
 *   DLDataType                  u8 code, u8 bits, u16 lanes
 *   DLDevice                    i32 device_type, i32 device_id
 *
 * Counts are always 64-bit, so a 32-bit runtime reads what a 64-bit compiler wrote.
 */
#ifndef TVMCOMPRESS_SHIM_TVM_SUPPORT_SERIALIZER_H_
#define TVMCOMPRESS_SHIM_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {
namespace shim_detail {

inline void WriteCount(Stream* strm, size_t count) {
  uint64_t wire = static_cast<uint64_t>(count);
  if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&wire, sizeof(wire), 1);
  strm->Write(static_cast<const void*>(&wire), sizeof(wire));
}

// Fails on a short read, and on a count that does not fit this machine's size_t (32-bit targets).
inline bool ReadCount(Stream* strm, size_t* count) {
  uint64_t wire = 0;
  if (strm->Read(static_cast<void*>(&wire), sizeof(wire)) != sizeof(wire)) return false;
  if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&wire, sizeof(wire), 1);
  if (wire > static_cast<uint64_t>(std::numeric_limits<size_t>::max())) return false;
  *count = static_cast<size_t>(wire);
  return true;
}

inline void WriteChars(Stream* strm, const char* data, size_t size) {
  WriteCount(strm, size);
  if (size != 0) strm->Write(static_cast<const void*>(data), size);
}

inline bool ReadChars(Stream* strm, std::string* out) {
  size_t size = 0;
  if (!ReadCount(strm, &size)) return false;
  out->assign(size, '\0');
  return size == 0 || strm->Read(static_cast<void*>(&(*out)[0]), size) == size;
}

}  // namespace shim_detail

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) {
    T wire = value;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&wire, sizeof(T), 1);
    strm->Write(static_cast<const void*>(&wire), sizeof(T));
  }
  static bool Read(Stream* strm, T* value) {
    if (strm->Read(static_cast<void*>(value), sizeof(T)) != sizeof(T)) return false;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(value, sizeof(T), 1);
    return true;
  }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Underlying = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& value) {
    Serializer<Underlying>::Write(strm, static_cast<Underlying>(value));
  }
  static bool Read(Stream* strm, T* value) {
    Underlying raw{};
    if (!Serializer<Underlying>::Read(strm, &raw)) return false;
    *value = static_cast<T>(raw);
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& value) {
    shim_detail::WriteChars(strm, value.data(), value.size());
  }
  static bool Read(Stream* strm, std::string* value) { return shim_detail::ReadChars(strm, value); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& value) {
    shim_detail::WriteChars(strm, value.data(), value.size());
  }
  static bool Read(Stream* strm, ffi::String* value) {
    std::string chars;
    if (!shim_detail::ReadChars(strm, &chars)) return false;
    *value = ffi::String(std::move(chars));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& values) {
    shim_detail::WriteCount(strm, values.size());
    for (const T& value : values) Serializer<T>::Write(strm, value);
  }
  static bool Read(Stream* strm, std::vector<T>* values) {
    size_t count = 0;
    if (!shim_detail::ReadCount(strm, &count)) return false;
    values->clear();
    values->resize(count);
    for (T& value : *values) {
      if (!Serializer<T>::Read(strm, &value)) return false;
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& values) {
    shim_detail::WriteCount(strm, values.size());
    for (const T& value : values) Serializer<T>::Write(strm, value);
  }
  static bool Read(Stream* strm, ffi::Array<T>* values) {
    size_t count = 0;
    if (!shim_detail::ReadCount(strm, &count)) return false;
    ffi::Array<T> result;
    result.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      T value{};
      if (!Serializer<T>::Read(strm, &value)) return false;
      result.push_back(std::move(value));
    }
    *values = std::move(result);
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& value) {
    Serializer<A>::Write(strm, value.first);
    Serializer<B>::Write(strm, value.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* value) {
    return Serializer<A>::Read(strm, &value->first) && Serializer<B>::Read(strm, &value->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& entries) {
    shim_detail::WriteCount(strm, entries.size());
    for (const auto& entry : entries) {
      Serializer<K>::Write(strm, entry.first);
      Serializer<V>::Write(strm, entry.second);
    }
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* entries) {
    size_t count = 0;
    if (!shim_detail::ReadCount(strm, &count)) return false;
    entries->clear();
    for (size_t i = 0; i < count; ++i) {
      K key{};
      V value{};
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      entries->emplace(std::move(key), std::move(value));
    }
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& entries) {
    shim_detail::WriteCount(strm, entries.size());
    for (const auto& entry : entries) {
      Serializer<K>::Write(strm, entry.first);
      Serializer<V>::Write(strm, entry.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* entries) {
    size_t count = 0;
    if (!shim_detail::ReadCount(strm, &count)) return false;
    ffi::Map<K, V> result;
    for (size_t i = 0; i < count; ++i) {
      K key{};
      V value{};
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      result.Set(std::move(key), std::move(value));
    }
    *entries = std::move(result);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& dtype) {
    Serializer<uint8_t>::Write(strm, dtype.code);
    Serializer<uint8_t>::Write(strm, dtype.bits);
    Serializer<uint16_t>::Write(strm, dtype.lanes);
  }
  static bool Read(Stream* strm, DLDataType* dtype) {
    return Serializer<uint8_t>::Read(strm, &dtype->code) && Serializer<uint8_t>::Read(strm, &dtype->bits) &&
           Serializer<uint16_t>::Read(strm, &dtype->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& device) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(device.device_type));
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(device.device_id));
  }
  static bool Read(Stream* strm, DLDevice* device) {
    int32_t type = 0;
    int32_t id = 0;
    if (!Serializer<int32_t>::Read(strm, &type) || !Serializer<int32_t>::Read(strm, &id)) return false;
    device->device_type = static_cast<DLDeviceType>(type);
    device->device_id = id;
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVMCOMPRESS_SHIM_TVM_SUPPORT_SERIALIZER_H_
