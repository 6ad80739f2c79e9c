/* weights_reader_check WEIGHTS.BIN: open a weights file with deploy_templates/weights_reader.h and decode
 * every tensor into a heap buffer of exactly the entry's nbytes (so that ASan sees any write or read past it).
 * Prints one line: "ok <count> <sum of decoded bytes>" or "error <message>". Exit 0 either way; a crash or a
 * sanitizer report is what test_weights_reader.py looks for. */
#include <stdio.h>
#include <stdlib.h>

#include "weights_reader.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  char err[512];
  tvmc_weights w;
  if (tvmc_weights_open(argv[1], &w, err, sizeof err) != 0) {
    printf("error %s\n", err);
    return 0;
  }
  unsigned long long checksum = 0;
  for (uint32_t i = 0; i < w.count; ++i) {
    unsigned char* dst = (unsigned char*)malloc(w.entries[i].nbytes == 0 ? 1 : (size_t)w.entries[i].nbytes);
    if (dst == NULL || tvmc_weights_read(&w, i, dst, err, sizeof err) != 0) {
      printf("error %s\n", dst == NULL ? "out of memory" : err);
      free(dst);
      tvmc_weights_close(&w);
      return 0;
    }
    for (uint64_t b = 0; b < w.entries[i].nbytes; ++b) checksum += dst[b];
    free(dst);
  }
  /* An index past the table must be refused, not read. */
  if (tvmc_weights_read(&w, w.count, NULL, err, sizeof err) == 0) {
    printf("error read past the table succeeded\n");
  } else {
    printf("ok %u %llu\n", w.count, checksum);
  }
  tvmc_weights_close(&w);
  return 0;
}
