// tvmcompress_runner: run one function of a Relax VM library (model.so) on the CPU.
//
// Built by tvmcompress.targets.qemu for a foreign architecture and run under qemu-user, so that a
// cross-compiled model can be checked on this machine. It links only against libtvm_ffi and
// libtvm_runtime (no Python).
//
// Usage:
//   tvmcompress_runner [--function NAME] [--samples N] MODEL.so OUT_DIR [INPUT.tensor ...]
//
// With --samples N the inputs are N groups of the function's arity, sample after sample, and sample k's
// outputs go to OUT_DIR/s<k>/ (which must exist): the library is loaded once for all of them, which is what
// makes running a whole evaluation set under qemu affordable.
//
// Every input and output is a tensor file in this little-endian format (written and read by qemu.py):
//   8 bytes   magic "TVMCTNS1"
//   u32       length L of the dtype string, then L bytes: the TVM dtype ("float32", "bool", "bfloat16")
//   u32       ndim, then ndim x i64 shape
//   u64       byte count N, then N bytes of row-major data
// Outputs go to OUT_DIR/out<i>.tensor in the order of a depth-first walk of the result (a tuple result
// gives several). The last stdout line is "outputs <count>".
//
// Exit codes: 0 success; 2 bad usage or input (the message says what); 3 an error raised by TVM,
// reported on stderr as "tvm-error <Kind>: <message>" followed by the backtrace.
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr char kMagic[8] = {'T', 'V', 'M', 'C', 'T', 'N', 'S', '1'};
// Values of tvm::runtime::memory::AllocatorType (kPooled), as the Python VirtualMachine passes them.
constexpr int kPooledAllocator = 2;

// A user-facing problem with the command line or an input file: exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Host memory for input tensors. 64-byte alignment matches what TVM's own CPU allocator gives, and
// generated kernels may assume it.
struct AlignedHostAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = ffi::GetDataSize(*tensor);
    size_t rounded = ((size == 0 ? 1 : size) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, rounded);
    if (tensor->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

template <typename T>
T ReadPod(std::istream& in, const std::string& path) {
  T value;
  if (!in.read(reinterpret_cast<char*>(&value), sizeof(T))) {
    throw UsageError(path + ": truncated tensor file");
  }
  return value;
}

template <typename T>
void WritePod(std::ostream& out, T value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof(T));
}

ffi::Tensor ReadTensor(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(path + ": cannot open input tensor file");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) {
    throw UsageError(path + ": not a tvmcompress tensor file (bad magic)");
  }
  uint32_t dtype_len = ReadPod<uint32_t>(in, path);
  if (dtype_len == 0 || dtype_len > 64) throw UsageError(path + ": bad dtype length");
  std::string dtype_str(dtype_len, '\0');
  if (!in.read(&dtype_str[0], dtype_len)) throw UsageError(path + ": truncated tensor file");
  uint32_t ndim = ReadPod<uint32_t>(in, path);
  if (ndim > 32) throw UsageError(path + ": too many dimensions");
  std::vector<int64_t> shape(ndim);
  for (auto& extent : shape) {
    extent = ReadPod<int64_t>(in, path);
    if (extent < 0) throw UsageError(path + ": negative extent");
  }
  uint64_t nbytes = ReadPod<uint64_t>(in, path);

  DLDataType dtype = ffi::StringToDLDataType(dtype_str);
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(AlignedHostAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                                dtype, cpu);
  size_t expected = ffi::GetDataSize(*tensor.GetDLTensorPtr());
  if (expected != nbytes) {
    throw UsageError(path + ": byte count " + std::to_string(nbytes) + " does not match dtype " + dtype_str +
                     " and shape (expected " + std::to_string(expected) + ")");
  }
  if (nbytes != 0 && !in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(nbytes))) {
    throw UsageError(path + ": truncated tensor data");
  }
  return tensor;
}

void WriteTensorFile(const std::string& path, const std::string& dtype_str, const std::vector<int64_t>& shape,
                     const void* data, uint64_t nbytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot open output file");
  out.write(kMagic, 8);
  WritePod<uint32_t>(out, static_cast<uint32_t>(dtype_str.size()));
  out.write(dtype_str.data(), static_cast<std::streamsize>(dtype_str.size()));
  WritePod<uint32_t>(out, static_cast<uint32_t>(shape.size()));
  for (int64_t extent : shape) WritePod<int64_t>(out, extent);
  WritePod<uint64_t>(out, nbytes);
  if (nbytes != 0) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  if (!out) throw std::runtime_error(path + ": write failed");
}

void WriteTensor(const std::string& path, const ffi::Tensor& tensor) {
  const DLTensor* dl = tensor.GetDLTensorPtr();
  if (dl->device.device_type != kDLCPU) {
    throw std::runtime_error("output is on device type " + std::to_string(dl->device.device_type) +
                             ", but this runner only handles CPU outputs");
  }
  if (!tensor.IsContiguous()) throw std::runtime_error("output tensor is not contiguous");
  std::vector<int64_t> shape(dl->shape, dl->shape + dl->ndim);
  const char* data = static_cast<const char*>(dl->data) + dl->byte_offset;
  WriteTensorFile(path, std::string(ffi::DLDataTypeToString(dl->dtype)), shape, data, ffi::GetDataSize(*dl));
}

// Walks a VM result depth-first and writes each leaf as one output file; returns the next index.
int WriteResult(const std::string& out_dir, const ffi::Any& value, int index) {
  std::string path = out_dir + "/out" + std::to_string(index) + ".tensor";
  switch (value.type_index()) {
    case ffi::TypeIndex::kTVMFFITensor:
      WriteTensor(path, value.cast<ffi::Tensor>());
      return index + 1;
    case ffi::TypeIndex::kTVMFFIArray: {
      for (const ffi::Any& item : value.cast<ffi::Array<ffi::Any>>()) index = WriteResult(out_dir, item, index);
      return index;
    }
    case ffi::TypeIndex::kTVMFFIShape: {
      ffi::Shape shape = value.cast<ffi::Shape>();
      std::vector<int64_t> data(shape.begin(), shape.end());
      WriteTensorFile(path, "int64", {static_cast<int64_t>(data.size())}, data.data(), data.size() * 8);
      return index + 1;
    }
    case ffi::TypeIndex::kTVMFFIInt: {
      int64_t v = value.cast<int64_t>();
      WriteTensorFile(path, "int64", {}, &v, 8);
      return index + 1;
    }
    case ffi::TypeIndex::kTVMFFIFloat: {
      double v = value.cast<double>();
      WriteTensorFile(path, "float64", {}, &v, 8);
      return index + 1;
    }
    case ffi::TypeIndex::kTVMFFIBool: {
      uint8_t v = value.cast<bool>() ? 1 : 0;
      WriteTensorFile(path, "bool", {}, &v, 1);
      return index + 1;
    }
    default:
      throw std::runtime_error("cannot write a result of type " + value.GetTypeKey());
  }
}

int Run(int argc, char** argv) {
  std::string function = "main";
  int samples = 0;  // 0: one call, outputs directly in OUT_DIR
  int pos = 1;
  while (pos < argc && std::string(argv[pos]).rfind("--", 0) == 0) {
    std::string flag = argv[pos];
    if (pos + 1 >= argc) throw UsageError(flag + " needs a value");
    if (flag == "--function") {
      function = argv[pos + 1];
    } else if (flag == "--samples") {
      samples = std::stoi(argv[pos + 1]);
      if (samples < 1) throw UsageError("--samples must be at least 1");
    } else {
      throw UsageError("unknown flag " + flag);
    }
    pos += 2;
  }
  if (argc - pos < 2) {
    throw UsageError("usage: tvmcompress_runner [--function NAME] [--samples N] MODEL.so OUT_DIR [INPUT.tensor ...]");
  }
  std::string model_path = argv[pos];
  std::string out_dir = argv[pos + 1];
  std::vector<ffi::Tensor> inputs;
  for (int i = pos + 2; i < argc; ++i) inputs.push_back(ReadTensor(argv[i]));

  ffi::Module library = ffi::Module::LoadFromFile(model_path);
  ffi::Optional<ffi::Function> load_executable = library->GetFunction("vm_load_executable");
  if (!load_executable.has_value()) {
    throw UsageError(model_path + " is not a Relax VM library (no vm_load_executable); build it with tvm.compile");
  }
  ffi::Module vm = (*load_executable)().cast<ffi::Module>();
  ffi::Optional<ffi::Function> init = vm->GetFunction("vm_initialization");
  if (!init.has_value()) throw UsageError(model_path + " has no vm_initialization");
  // One CPU device with the pooled allocator, as tvm.relax.VirtualMachine(ex, tvm.cpu()) does.
  (*init)(static_cast<int>(kDLCPU), 0, kPooledAllocator);

  ffi::Optional<ffi::Function> arity_fn = vm->GetFunction("get_function_arity");
  ffi::Optional<ffi::Function> entry = vm->GetFunction(function);
  if (!entry.has_value()) throw UsageError(model_path + " has no function '" + function + "'");
  int groups = samples == 0 ? 1 : samples;
  if (inputs.size() % groups != 0) {
    throw UsageError(std::to_string(inputs.size()) + " input files do not split into " + std::to_string(groups) +
                     " samples");
  }
  size_t per_sample = inputs.size() / groups;
  if (arity_fn.has_value()) {
    int arity = (*arity_fn)(function).cast<int>();
    if (arity != static_cast<int>(per_sample)) {
      throw UsageError("function '" + function + "' takes " + std::to_string(arity) + " inputs, got " +
                       std::to_string(per_sample));
    }
  }

  int count = 0;
  for (int k = 0; k < groups; ++k) {
    std::vector<ffi::AnyView> args(inputs.begin() + k * per_sample, inputs.begin() + (k + 1) * per_sample);
    ffi::Any result;
    entry.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    count = WriteResult(samples == 0 ? out_dir : out_dir + "/s" + std::to_string(k), result, 0);
  }
  std::cout << "outputs " << count << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const UsageError& err) {
    std::cerr << "usage-error: " << err.what() << std::endl;
    return 2;
  } catch (const ffi::Error& err) {
    std::cerr << "tvm-error " << err.kind() << ": " << err.message() << "\n" << err.backtrace() << std::endl;
    return 3;
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << std::endl;
    return 4;
  }
}
