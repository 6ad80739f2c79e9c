/* two_models IN_A.bin IN_B.bin OUT_A.bin OUT_B.bin: runs model `digits` and model `zoo_cnn`, both linked
 * statically into this one program (their TVM system libraries carry different symbol prefixes). */
#include <stdio.h>
#include <stdlib.h>

#include "digits/model.h"
#include "zoo_cnn/model.h"

static void* read_file(const char* path, size_t size) {
  char* data = malloc(size);
  FILE* file = fopen(path, "rb");
  if (file == NULL || data == NULL || fread(data, 1, size, file) != size) exit(3);
  fclose(file);
  return data;
}

static void write_file(const char* path, const void* data, size_t size) {
  FILE* file = fopen(path, "wb");
  if (file == NULL || fwrite(data, 1, size, file) != size) exit(4);
  fclose(file);
}

int main(int argc, char** argv) {
  if (argc != 5) return 2;
  digits_model* a = NULL;
  zoo_cnn_model* b = NULL;
  if (digits_create(NULL, 1, &a) != DIGITS_OK) return fprintf(stderr, "%s\n", digits_last_error()), 1;
  if (zoo_cnn_create(NULL, 1, &b) != ZOO_CNN_OK) return fprintf(stderr, "%s\n", zoo_cnn_last_error()), 1;
  const void* in_a[1] = {read_file(argv[1], digits_input_bytes[0])};
  const void* in_b[1] = {read_file(argv[2], zoo_cnn_input_bytes[0])};
  void* out_a[1] = {malloc(digits_output_bytes[0])};
  void* out_b[1] = {malloc(zoo_cnn_output_bytes[0])};
  /* Interleaved on purpose: each model's state must be its own. */
  if (digits_run(a, in_a, out_a) != DIGITS_OK) return fprintf(stderr, "%s\n", digits_last_error()), 1;
  if (zoo_cnn_run(b, in_b, out_b) != ZOO_CNN_OK) return fprintf(stderr, "%s\n", zoo_cnn_last_error()), 1;
  if (digits_run(a, in_a, out_a) != DIGITS_OK) return fprintf(stderr, "%s\n", digits_last_error()), 1;
  write_file(argv[3], out_a[0], digits_output_bytes[0]);
  write_file(argv[4], out_b[0], zoo_cnn_output_bytes[0]);
  digits_destroy(a);
  zoo_cnn_destroy(b);
  return 0;
}
