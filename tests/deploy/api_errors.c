/* api_errors BUNDLE_KIND: calls the C API of the model named `m` wrongly on purpose and prints one line per
 * case, "<case> <return code> <message>", for test_export.py to check. Never crashes, never aborts. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

static void report(const char* what, int code) { printf("%s %d %s\n", what, code, m_last_error()); }

int main(void) {
  m_model* model = NULL;
  report("create_null_out", m_create(NULL, 0, NULL));
  report("create_negative_threads", m_create(NULL, -1, &model));
  report("create_missing_dir", m_create("/nonexistent-dir", 1, &model));
  report("run_null_model", m_run(NULL, NULL, NULL));
  int created = m_create(NULL, 1, &model);
  report("create", created);
  if (created != M_OK) return 1;
  char* in = calloc(1, m_input_bytes[0]);
  char* out = calloc(1, m_output_bytes[0]);
  const void* inputs[M_NUM_INPUTS] = {in};
  void* outputs[M_NUM_OUTPUTS] = {out};
  const void* null_inputs[M_NUM_INPUTS] = {NULL};
  report("run_null_arrays", m_run(model, NULL, outputs));
  report("run_null_input_buffer", m_run(model, null_inputs, outputs));
  report("run", m_run(model, inputs, outputs));
  m_destroy(model);
  m_destroy(NULL);
  free(in);
  free(out);
  return 0;
}
