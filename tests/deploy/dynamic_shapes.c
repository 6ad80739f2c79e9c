/* dynamic_shapes N IN OUT: runs the dynamic-batch MLP bundle `m` (input [N, 16] float32) through m_run_shaped on
 * the N*16 floats in IN, writes the output's floats to OUT and prints "<return code> <output shape> <message>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  int64_t batch = atoll(argv[1]);
  m_model* model = NULL;
  if (m_create(NULL, 1, &model) != M_OK) {
    printf("create %s\n", m_last_error());
    return 1;
  }
  float* in = calloc(1, m_input_bytes[0]);
  float* out = calloc(1, m_output_bytes[0]);
  FILE* f = fopen(argv[2], "rb");
  size_t count = batch > 0 && batch <= m_dim_max[0] ? (size_t)batch * 16 : 0;
  if (f == NULL || fread(in, sizeof(float), count, f) != count) return 3;
  fclose(f);
  int64_t in_shape[2] = {batch, 16};
  int64_t out_shape[2] = {0, 0};
  const int64_t* input_shapes[M_NUM_INPUTS] = {in_shape};
  int64_t* output_shapes[M_NUM_OUTPUTS] = {out_shape};
  const void* inputs[M_NUM_INPUTS] = {in};
  void* outputs[M_NUM_OUTPUTS] = {out};
  int code = m_run_shaped(model, input_shapes, inputs, outputs, output_shapes);
  printf("%d %lld,%lld %s\n", code, (long long)out_shape[0], (long long)out_shape[1], m_last_error());
  if (code == M_OK) {
    FILE* o = fopen(argv[3], "wb");
    fwrite(out, sizeof(float), (size_t)(out_shape[0] * out_shape[1]), o);
    fclose(o);
  }
  m_destroy(model);
  free(in);
  free(out);
  return 0;
}
