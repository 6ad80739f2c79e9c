/* tvcw_decode IN OUT: decode a TVCW blob file into a raw file (exit 0), or print the error code (exit 1).
 * A command-line check of the device-side decoder; tests cross-compile it and run it under qemu-user. */
#include <stdio.h>
#include <stdlib.h>

#include "weight_codec.h"

static unsigned char* read_file(const char* path, size_t* len) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* buf = malloc(size > 0 ? (size_t)size : 1);
  *len = buf ? fread(buf, 1, (size_t)size, f) : 0;
  fclose(f);
  return buf;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s BLOB OUT\n", argv[0]);
    return 2;
  }
  size_t len = 0;
  unsigned char* blob = read_file(argv[1], &len);
  if (!blob) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 2;
  }
  int64_t size = tvcw_decoded_size(blob, len);
  if (size < 0) {
    fprintf(stderr, "error %lld\n", (long long)size);
    return 1;
  }
  unsigned char* out = malloc(size > 0 ? (size_t)size : 1);
  int64_t got = tvcw_decode(blob, len, out, (size_t)size);
  if (got < 0) {
    fprintf(stderr, "error %lld\n", (long long)got);
    return 1;
  }
  FILE* f = fopen(argv[2], "wb");
  if (!f || fwrite(out, 1, (size_t)got, f) != (size_t)got) return 2;
  fclose(f);
  free(out);
  free(blob);
  return 0;
}
