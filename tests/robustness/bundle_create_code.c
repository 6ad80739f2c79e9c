/* bundle_create_code DIR: emb_create(DIR) once and print "<return code> <last error>", for
 * test_bundle_asan.py to check the C API's error code on a damaged weights.bin. Built with ASan like the rest. */
#include <stdio.h>

#include "model.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  emb_model* model = NULL;
  int code = emb_create(argv[1], 1, &model);
  printf("%d %s\n", code, code == EMB_OK ? "" : emb_last_error());
  emb_destroy(model);
  return 0;
}
