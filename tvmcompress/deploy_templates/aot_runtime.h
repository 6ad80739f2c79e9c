/* tvmcompress AOT runtime: the few symbols TVM-compiled kernels call, and the loop that calls the model's
 * kernels in order over one static arena. No heap, no threads, no libtvm_runtime, no libtvm_ffi.
 *
 * A model's generated C file (model_aot.c) holds its tables: tensors (where each lives: an input, the
 * arena at an offset, or a const weight), calls (which kernel, which tensors as its arguments) and outputs.
 * The ABI the kernels expect is TVM-FFI's packed calling convention: an array of 16-byte "Any" values, each
 * here a DLTensor pointer. The structs below spell out those layouts (DLPack v1 and TVM-FFI's TVMFFIAny) so
 * that no TVM header is needed to build the firmware. */
#ifndef TVMCOMPRESS_AOT_RUNTIME_H_
#define TVMCOMPRESS_AOT_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#define TVMC_AOT_INPUT 0
#define TVMC_AOT_ARENA 1
#define TVMC_AOT_CONST 2

/* The signature of every kernel the AOT program calls (TVM-FFI "safe call"). */
typedef int32_t (*tvmc_aot_kernel)(void* self, void* args, int32_t num_args, void* result);

typedef struct {
  const int64_t* shape;
  uint32_t where;     /* input index, arena byte offset or const index, by `kind` */
  uint8_t kind;       /* TVMC_AOT_INPUT / _ARENA / _CONST */
  uint8_t ndim;
  uint8_t dtype_code; /* DLPack: 0 int, 1 uint, 2 float, 4 bfloat */
  uint8_t dtype_bits;
} tvmc_aot_tensor;

typedef struct {
  tvmc_aot_kernel kernel;
  const char* name;
  uint16_t first_arg; /* index into the program's call_args */
  uint16_t num_args;
} tvmc_aot_call;

typedef struct {
  const tvmc_aot_tensor* tensors;
  const tvmc_aot_call* calls;
  const uint16_t* call_args; /* tensor indices */
  const void* const* consts;
  const uint16_t* outputs;   /* tensor index of each model output */
  const uint32_t* output_bytes;
  uint32_t num_calls;
  uint32_t num_outputs;
  uint32_t arena_bytes;
  uint32_t workspace_offset; /* kernels' scratch (TVMBackendAllocWorkspace) comes from this arena range */
  uint32_t workspace_bytes;
} tvmc_aot_program;

/* Run the program once. `arena`: arena_bytes writable bytes, 64-byte aligned. Returns 0, or -1 with
 * tvmc_aot_last_error() saying which kernel failed and why. Not reentrant: one run at a time per program. */
int tvmc_aot_run(const tvmc_aot_program* program, uint8_t* arena, const void* const* inputs, void* const* outputs);

/* The last error message ("" when none). */
const char* tvmc_aot_last_error(void);
void tvmc_aot_set_error(const char* message);

#endif /* TVMCOMPRESS_AOT_RUNTIME_H_ */
