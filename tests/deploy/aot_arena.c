/* aot_arena IN.bin OUT.bin: runs the AOT model named `m` through m_run_with_arena on a static arena, with
 * malloc/calloc/realloc wrapped (-Wl,--wrap=...) to count calls, and checks the API's argument errors.
 * Prints "<case> <return code>" lines and "allocations <n>" for test_aot.py. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

static int allocations;
void* __real_malloc(size_t size);
void* __real_calloc(size_t count, size_t size);
void* __real_realloc(void* ptr, size_t size);
void* __wrap_malloc(size_t size) { ++allocations; return __real_malloc(size); }
void* __wrap_calloc(size_t count, size_t size) { ++allocations; return __real_calloc(count, size); }
void* __wrap_realloc(void* ptr, size_t size) { ++allocations; return __real_realloc(ptr, size); }

static unsigned char arena[M_ARENA_BYTES + M_ARENA_ALIGN] __attribute__((aligned(M_ARENA_ALIGN)));
static unsigned char in[4096], out[4096];

int main(int argc, char** argv) {
  if (argc != 3 || m_input_bytes[0] > sizeof in || m_output_bytes[0] > sizeof out) return 2;
  FILE* file = fopen(argv[1], "rb");
  if (file == NULL || fread(in, 1, m_input_bytes[0], file) != m_input_bytes[0]) return 2;
  fclose(file);
  const void* inputs[1] = {in};
  void* outputs[1] = {out};
  const void* null_inputs[1] = {NULL};
  int before = allocations;
  printf("misaligned %d\n", m_run_with_arena(arena + 1, inputs, outputs));
  printf("null_input %d\n", m_run_with_arena(arena, null_inputs, outputs));
  printf("null_arena %d\n", m_run_with_arena(NULL, inputs, outputs));
  printf("run %d\n", m_run_with_arena(arena, inputs, outputs));
  printf("allocations %d\n", allocations - before);
  file = fopen(argv[2], "wb");
  if (file == NULL || fwrite(out, 1, m_output_bytes[0], file) != m_output_bytes[0]) return 2;
  fclose(file);
  return 0;
}
