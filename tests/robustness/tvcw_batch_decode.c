/* Test driver: decode many TVCW blobs with the C decoder (tvmcompress/codec/weight_codec.c) in one process.
 * Input file: records of u32 capacity | u32 blob length | blob. Output file: per record, i64 result (the
 * decoded length, or a negative TVCW_ERR_*) and, when >= 0, the decoded bytes. Used by
 * tests/robustness/test_weight_codec_fuzz.py, also built with -fsanitize=address,undefined: every blob is
 * decoded into a buffer of exactly `capacity` bytes so that ASan sees any write past it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "weight_codec.h"

static int read_u32(FILE* f, uint32_t* value) {
  unsigned char b[4];
  if (fread(b, 1, 4, f) != 4) return 0;
  *value = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s RECORDS OUT\n", argv[0]);
    return 2;
  }
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (!in || !out) return 2;
  uint32_t capacity, length;
  while (read_u32(in, &capacity) && read_u32(in, &length)) {
    /* Exact-size heap buffers (malloc(0) may return NULL: allocate at least one byte, pass the true size). */
    uint8_t* blob = malloc(length ? length : 1);
    uint8_t* dst = malloc(capacity ? capacity : 1);
    if (!blob || !dst || fread(blob, 1, length, in) != length) return 2;
    int64_t result = tvcw_decode(blob, length, dst, capacity);
    fwrite(&result, sizeof result, 1, out);
    if (result > 0) fwrite(dst, 1, (size_t)result, out);
    free(blob);
    free(dst);
  }
  fclose(out);
  fclose(in);
  return 0;
}
