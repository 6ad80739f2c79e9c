/* Reader of weights.bin, the separate weights file of a tvmcompress model. Plain C99 (usable from C++);
 * every function is static, so each model's C API carries its own copy without symbol clashes.
 * The format is described in tvmcompress/weights_file.py, which writes it; keep both in step.
 *
 *   tvmc_weights w;
 *   char err[256];
 *   if (tvmc_weights_open("weights.bin", &w, err, sizeof err) != 0) ...        (header and table)
 *   tvmc_weights_read(&w, i, dst, err, sizeof err);                         (decode tensor i into dst)
 *   tvmc_weights_close(&w);
 */
#ifndef TVMCOMPRESS_WEIGHTS_READER_H_
#define TVMCOMPRESS_WEIGHTS_READER_H_

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weight_codec.h" /* the "tvcw" codec: tvmcompress/codec/, compiled into the same library */

#define TVMC_WEIGHTS_MAX_NDIM 8
#define TVMC_WEIGHTS_HEADER_BYTES 40
#define TVMC_WEIGHTS_ENTRY_BYTES 112

typedef struct {
  char dtype[17];
  uint32_t ndim;
  int64_t shape[TVMC_WEIGHTS_MAX_NDIM];
  uint64_t offset;
  uint64_t stored_bytes;
  uint64_t nbytes;
} tvmc_weight_entry;

typedef struct {
  FILE* file;
  uint64_t file_bytes;
  char codec[17];
  uint32_t count;
  tvmc_weight_entry* entries;
} tvmc_weights;

/* Little-endian loads, whatever the host's byte order. */
static uint64_t tvmc_load_le(const unsigned char* p, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

static int tvmc_weights_fail(char* err, size_t err_size, const char* message, const char* detail) {
  snprintf(err, err_size, "%s%s", message, detail);
  return -1;
}

/* The one place that knows codecs: decode `src` (stored_bytes) into `dst` (nbytes). "raw" is a copy,
 * "tvcw" the entropy coder of tvmcompress/weight_codec.py. A new codec adds a branch here and in
 * weights_file.decode. */
static int tvmc_weights_decode(const char* codec, const unsigned char* src, uint64_t stored_bytes, void* dst,
                               uint64_t nbytes, char* err, size_t err_size) {
  if (strcmp(codec, "raw") == 0) {
    if (stored_bytes != nbytes) return tvmc_weights_fail(err, err_size, "weights file damaged: raw size mismatch", "");
    memcpy(dst, src, (size_t)nbytes);
    return 0;
  }
  if (strcmp(codec, "tvcw") == 0) {
    int64_t decoded = tvcw_decode(src, (size_t)stored_bytes, (uint8_t*)dst, (size_t)nbytes);
    if (decoded != (int64_t)nbytes) return tvmc_weights_fail(err, err_size, "weights file damaged: tvcw blob", "");
    return 0;
  }
  return tvmc_weights_fail(err, err_size, "weights file uses an unknown codec: ", codec);
}

/* Bytes per element of a dtype weights_file.py writes (numpy's itemsize; ml_dtypes' sub-byte types take a
 * byte each there), or 0 for a name it never writes. */
static uint64_t tvmc_weights_itemsize(const char* dtype) {
  static const char* const one[] = {"bool", "int8", "uint8", "float8_e4m3fn", "float8_e5m2", "int4", "uint4", NULL};
  static const char* const two[] = {"int16", "uint16", "float16", "bfloat16", NULL};
  static const char* const four[] = {"int32", "uint32", "float32", NULL};
  static const char* const eight[] = {"int64", "uint64", "float64", NULL};
  const char* const* tables[] = {one, two, four, eight};
  for (int t = 0; t < 4; ++t) {
    for (const char* const* name = tables[t]; *name != NULL; ++name) {
      if (strcmp(dtype, *name) == 0) return (uint64_t)1 << t;
    }
  }
  return 0;
}

/* Every field of a table entry against the file, as weights_file._entry_problem checks them: the data lies
 * inside the file, the dtype is known, and nbytes is exactly prod(shape) * itemsize, computed without
 * overflow. Afterwards a reader may trust offset, stored_bytes and nbytes. */
static int tvmc_weights_entry_ok(const tvmc_weight_entry* e, uint64_t file_bytes) {
  if (e->ndim > TVMC_WEIGHTS_MAX_NDIM) return 0;
  if (e->offset > file_bytes || e->stored_bytes > file_bytes - e->offset) return 0;
  if (e->offset > (uint64_t)LONG_MAX) return 0; /* fseek takes a long */
  uint64_t bytes = tvmc_weights_itemsize(e->dtype);
  if (bytes == 0) return 0;
  for (uint32_t d = 0; d < e->ndim; ++d) {
    if (e->shape[d] < 0) return 0;
    uint64_t dim = (uint64_t)e->shape[d];
    if (dim != 0 && bytes > UINT64_MAX / dim) return 0;
    bytes *= dim;
  }
  return bytes == e->nbytes && e->nbytes <= (uint64_t)SIZE_MAX;
}

static void tvmc_weights_close(tvmc_weights* w) {
  if (w->file != NULL) fclose(w->file);
  free(w->entries);
  w->file = NULL;
  w->entries = NULL;
}

static int tvmc_weights_open(const char* path, tvmc_weights* w, char* err, size_t err_size) {
  unsigned char head[TVMC_WEIGHTS_HEADER_BYTES];
  long size = 0;
  memset(w, 0, sizeof(*w));
  w->file = fopen(path, "rb");
  if (w->file == NULL) return tvmc_weights_fail(err, err_size, "cannot open weights file ", path);
  if (fseek(w->file, 0, SEEK_END) != 0) goto damaged;
  size = ftell(w->file);
  if (size < 0 || fseek(w->file, 0, SEEK_SET) != 0) goto damaged;
  w->file_bytes = (uint64_t)size;
  if (fread(head, 1, sizeof head, w->file) != sizeof head || memcmp(head, "TVMCWTS1", 8) != 0) {
    tvmc_weights_close(w);
    return tvmc_weights_fail(err, err_size, "not a tvmcompress weights file (bad magic): ", path);
  }
  if (tvmc_load_le(head + 8, 4) != 1) {
    tvmc_weights_close(w);
    return tvmc_weights_fail(err, err_size, "unsupported weights file version: ", path);
  }
  w->count = (uint32_t)tvmc_load_le(head + 12, 4);
  memcpy(w->codec, head + 24, 16);
  w->codec[16] = '\0';
  /* The table must fit in the file before anything is allocated for it: a damaged count asks for nothing. */
  if (w->file_bytes < TVMC_WEIGHTS_HEADER_BYTES ||
      w->count > (w->file_bytes - TVMC_WEIGHTS_HEADER_BYTES) / TVMC_WEIGHTS_ENTRY_BYTES) {
    goto damaged;
  }
  w->entries = (tvmc_weight_entry*)calloc(w->count == 0 ? 1 : w->count, sizeof(tvmc_weight_entry));
  if (w->entries == NULL) goto damaged;
  for (uint32_t i = 0; i < w->count; ++i) {
    unsigned char raw[TVMC_WEIGHTS_ENTRY_BYTES];
    tvmc_weight_entry* e = &w->entries[i];
    if (fread(raw, 1, sizeof raw, w->file) != sizeof raw) goto damaged;
    memcpy(e->dtype, raw, 16);
    e->dtype[16] = '\0';
    e->ndim = (uint32_t)tvmc_load_le(raw + 16, 4);
    for (int d = 0; d < TVMC_WEIGHTS_MAX_NDIM; ++d) e->shape[d] = (int64_t)tvmc_load_le(raw + 24 + 8 * d, 8);
    e->offset = tvmc_load_le(raw + 88, 8);
    e->stored_bytes = tvmc_load_le(raw + 96, 8);
    e->nbytes = tvmc_load_le(raw + 104, 8);
    if (!tvmc_weights_entry_ok(e, w->file_bytes)) goto damaged;
  }
  return 0;
damaged:
  tvmc_weights_close(w);
  return tvmc_weights_fail(err, err_size, "weights file is truncated or damaged: ", path);
}

/* Decode tensor `index` into `dst`, which holds entries[index].nbytes bytes. */
static int tvmc_weights_read(tvmc_weights* w, uint32_t index, void* dst, char* err, size_t err_size) {
  if (w->entries == NULL || index >= w->count) return tvmc_weights_fail(err, err_size, "no such weight tensor", "");
  const tvmc_weight_entry* e = &w->entries[index];
  unsigned char* stored = (unsigned char*)malloc(e->stored_bytes == 0 ? 1 : (size_t)e->stored_bytes);
  if (stored == NULL) return tvmc_weights_fail(err, err_size, "out of memory reading weights", "");
  int status = 0;
  if (fseek(w->file, (long)e->offset, SEEK_SET) != 0 ||
      fread(stored, 1, (size_t)e->stored_bytes, w->file) != e->stored_bytes) {
    status = tvmc_weights_fail(err, err_size, "weights file is truncated", "");
  } else {
    status = tvmc_weights_decode(w->codec, stored, e->stored_bytes, dst, e->nbytes, err, err_size);
  }
  free(stored);
  return status;
}

#endif /* TVMCOMPRESS_WEIGHTS_READER_H_ */
