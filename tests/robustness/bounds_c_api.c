/* bounds_c_api IN.bin: runs the model named `idx` (test_bounds_indices.py) through its C API with the valid
 * inputs of IN.bin, then with ids[0][2] (input 0, int64) set out of range, and prints one line per case,
 * "<case> <return code> <message>". Never crashes, never aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static void report(const char* what, int code) { printf("%s %d %s\n", what, code, idx_last_error()); }

int main(int argc, char** argv) {
  if (argc != 2 || strcmp(idx_input_names[0], "ids") != 0) return 2;
  size_t in_size = 0;
  for (int i = 0; i < IDX_NUM_INPUTS; ++i) in_size += idx_input_bytes[i];
  char* in_data = malloc(in_size);
  FILE* file = fopen(argv[1], "rb");
  if (in_data == NULL || file == NULL || fread(in_data, 1, in_size, file) != in_size) return 2;
  fclose(file);
  const void* inputs[IDX_NUM_INPUTS];
  void* outputs[IDX_NUM_OUTPUTS];
  size_t offset = 0;
  for (int i = 0; i < IDX_NUM_INPUTS; offset += idx_input_bytes[i], ++i) inputs[i] = in_data + offset;
  for (int i = 0; i < IDX_NUM_OUTPUTS; ++i) outputs[i] = calloc(1, idx_output_bytes[i]);

  idx_model* model = NULL;
  int created = idx_create(NULL, 1, &model);
  report("create", created);
  if (created != IDX_OK) return 1;
  int64_t* ids = (int64_t*)in_data;
  const float* rows = (const float*)outputs[0];
  ids[2] = 9;
  report("run_valid", idx_run(model, inputs, outputs));
  /* Row 9 of the 10x4 table arange(40) is 36..39. */
  printf("row_9 %d\n", !(rows[8] == 36.0f && rows[11] == 39.0f));
  ids[2] = 10;
  report("run_10", idx_run(model, inputs, outputs));
  ids[2] = 1000000;
  report("run_1000000", idx_run(model, inputs, outputs));
  ids[2] = -10;
  report("run_valid_again", idx_run(model, inputs, outputs));
  idx_destroy(model);
  free(in_data);
  for (int i = 0; i < IDX_NUM_OUTPUTS; ++i) free(outputs[i]);
  return 0;
}
