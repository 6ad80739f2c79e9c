/* tvmcompress AOT runtime: see aot_runtime.h. Everything here is ours; the layouts of DLTensor (DLPack v1)
 * and TVMFFIAny are restated because the kernels were compiled against them. */
#include "aot_runtime.h"

#include <string.h>

typedef struct {
  int32_t device_type;
  int32_t device_id;
} tvmc_dl_device;

typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} tvmc_dl_dtype;

typedef struct { /* DLTensor */
  void* data;
  tvmc_dl_device device;
  int32_t ndim;
  tvmc_dl_dtype dtype;
  const int64_t* shape;
  const int64_t* strides;
  uint64_t byte_offset;
} tvmc_dl_tensor;

typedef struct { /* TVMFFIAny: 16 bytes on every ABI (the union holds an int64) */
  int32_t type_index;
  uint32_t zero_padding;
  union {
    int64_t v_int64;
    void* v_ptr;
  } value;
} tvmc_ffi_any;

#define TVMC_FFI_DLTENSOR_PTR 7 /* kTVMFFIDLTensorPtr */
#define TVMC_DEVICE_CPU 1       /* kDLCPU */
#define TVMC_MAX_ARGS 32
#define TVMC_ALIGN 64           /* what TVM's own allocator gives kernels */

/* ---- errors: kernels report through TVM-FFI's C API; we keep the message ---------------------------------- */

static char error_message[192];
static char kernel_message[160]; /* what the failing kernel reported */

static void append(size_t* used, const char* text) {
  while (*text != '\0' && *used + 1 < sizeof(error_message)) error_message[(*used)++] = *text++;
  error_message[*used] = '\0';
}

void tvmc_aot_set_error(const char* message) {
  size_t used = 0;
  append(&used, message);
}

const char* tvmc_aot_last_error(void) { return error_message; }

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  size_t used = 0;
  for (const char* k = kind; *k != '\0' && used + 1 < sizeof(kernel_message); ++k) kernel_message[used++] = *k;
  for (int32_t i = -1; i < num_parts; ++i) {
    for (const char* p = i < 0 ? ": " : parts[i]; *p != '\0' && used + 1 < sizeof(kernel_message); ++p) {
      kernel_message[used++] = *p;
    }
  }
  kernel_message[used] = '\0';
}

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  TVMFFIErrorSetRaisedFromCStrParts(kind, &message, 1);
}

/* ---- workspace: a stack in the arena's workspace range (kernels free in reverse order) -------------------- */

static uint8_t* workspace_base;
static uint32_t workspace_size;
static uint32_t workspace_top;

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  uint32_t start = (workspace_top + TVMC_ALIGN - 1) & ~(uint32_t)(TVMC_ALIGN - 1);
  if (nbytes > workspace_size || start > workspace_size - nbytes) return NULL; /* the kernel reports it */
  workspace_top = start + (uint32_t)nbytes;
  return workspace_base + start;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  uint8_t* p = (uint8_t*)ptr;
  if (p < workspace_base || p > workspace_base + workspace_size) return -1;
  workspace_top = (uint32_t)(p - workspace_base); /* frees ptr and anything allocated after it */
  return 0;
}

/* ---- parallel loops: run on the calling thread, as one task ------------------------------------------------ */

typedef struct {
  void* sync_handle;
  int32_t num_task;
} tvmc_parallel_env;

typedef int (*tvmc_parallel_lambda)(int task_id, tvmc_parallel_env* env, void* cdata);

int TVMBackendParallelLaunch(tvmc_parallel_lambda lambda, void* cdata, int num_task) {
  (void)num_task;
  tvmc_parallel_env env = {NULL, 1};
  return lambda(0, &env, cdata);
}

int TVMBackendParallelBarrier(int task_id, tvmc_parallel_env* env) {
  (void)task_id, (void)env;
  return 0;
}

/* LLVM-built kernels of a non-system library reach the runtime through these pointers, which TVM's module
 * loader fills in; the kernels' own copies are weak and null, so ours win at link time. */
void* __TVMBackendAllocWorkspace = (void*)&TVMBackendAllocWorkspace;
void* __TVMBackendFreeWorkspace = (void*)&TVMBackendFreeWorkspace;
void* __TVMBackendParallelLaunch = (void*)&TVMBackendParallelLaunch;
void* __TVMBackendParallelBarrier = (void*)&TVMBackendParallelBarrier;
void* __TVMFFIErrorSetRaisedFromCStrParts = (void*)&TVMFFIErrorSetRaisedFromCStrParts;
void* __TVMFFIErrorSetRaisedFromCStr = (void*)&TVMFFIErrorSetRaisedFromCStr;

#if defined(__ARM_EABI__)
/* LLVM gives the kernels ARM unwind tables that name this personality routine. Nothing unwinds through a
 * kernel (they are C functions that return error codes), so a stub keeps libgcc's unwinder (and, on Linux,
 * libgcc_s.so) out of the program. Local to the model's object after export (archive() localizes it). */
void __aeabi_unwind_cpp_pr0(void) {}
#endif

/* ---- the program ------------------------------------------------------------------------------------------ */

static void* tensor_data(const tvmc_aot_program* program, const tvmc_aot_tensor* t, uint8_t* arena,
                         const void* const* inputs) {
  switch (t->kind) {
    case TVMC_AOT_INPUT: return (void*)inputs[t->where];
    case TVMC_AOT_ARENA: return arena + t->where;
    default: return (void*)program->consts[t->where];
  }
}

int tvmc_aot_run(const tvmc_aot_program* program, uint8_t* arena, const void* const* inputs, void* const* outputs) {
  if (arena == NULL || ((uintptr_t)arena & (TVMC_ALIGN - 1)) != 0) {
    tvmc_aot_set_error("the arena must be a 64-byte aligned buffer");
    return -1;
  }
  workspace_base = arena + program->workspace_offset;
  workspace_size = program->workspace_bytes;
  workspace_top = 0;
  tvmc_dl_tensor tensors[TVMC_MAX_ARGS];
  tvmc_ffi_any args[TVMC_MAX_ARGS];
  for (uint32_t c = 0; c < program->num_calls; ++c) {
    const tvmc_aot_call* call = &program->calls[c];
    for (uint16_t a = 0; a < call->num_args; ++a) {
      const tvmc_aot_tensor* t = &program->tensors[program->call_args[call->first_arg + a]];
      tvmc_dl_tensor* d = &tensors[a];
      d->data = tensor_data(program, t, arena, inputs);
      d->device.device_type = TVMC_DEVICE_CPU;
      d->device.device_id = 0;
      d->ndim = t->ndim;
      d->dtype.code = t->dtype_code;
      d->dtype.bits = t->dtype_bits;
      d->dtype.lanes = 1;
      d->shape = t->shape;
      d->strides = NULL; /* compact row-major */
      d->byte_offset = 0;
      args[a].type_index = TVMC_FFI_DLTENSOR_PTR;
      args[a].zero_padding = 0;
      args[a].value.v_ptr = d;
    }
    tvmc_ffi_any result;
    result.type_index = 0;
    result.zero_padding = 0;
    result.value.v_int64 = 0;
    kernel_message[0] = '\0';
    if (call->kernel(NULL, args, call->num_args, &result) != 0) {
      size_t used = 0;
      append(&used, "kernel ");
      append(&used, call->name);
      append(&used, " failed: ");
      append(&used, kernel_message);
      return -1;
    }
  }
  for (uint32_t o = 0; o < program->num_outputs; ++o) {
    const tvmc_aot_tensor* t = &program->tensors[program->outputs[o]];
    memcpy(outputs[o], tensor_data(program, t, arena, inputs), program->output_bytes[o]);
  }
  error_message[0] = '\0';
  return 0;
}
