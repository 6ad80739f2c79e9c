/* Decoder of tvmcompress weight blobs ("TVCW" v1); the format is described in weight_codec.h.
 * The encoder is tvmcompress/weight_codec.py; tests/test_weight_codec.py checks that both agree byte for byte. */
#include "weight_codec.h"

#include <string.h>

#define TVCW_PROB_BITS 14
#define TVCW_PROB_SCALE (1u << TVCW_PROB_BITS)
#define TVCW_RANS_L (1u << 23) /* lower bound of the normalized state: 32-bit state, byte renormalization */
#define TVCW_HEADER 16

static uint32_t read_u16(const uint8_t* p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t read_u32(const uint8_t* p) { return read_u16(p) | (read_u16(p + 2) << 16); }
static uint64_t read_u64(const uint8_t* p) { return (uint64_t)read_u32(p) | ((uint64_t)read_u32(p + 4) << 32); }

int tvcw_is_blob(const uint8_t* src, size_t src_len) {
  return src_len >= TVCW_HEADER && memcmp(src, "TVCW", 4) == 0;
}

int64_t tvcw_decoded_size(const uint8_t* src, size_t src_len) {
  if (src_len < TVCW_HEADER) return TVCW_ERR_TRUNCATED;
  if (!tvcw_is_blob(src, src_len) || src[4] != 1) return TVCW_ERR_FORMAT;
  uint32_t elem = src[5];
  if (elem != 1 && elem != 2 && elem != 4 && elem != 8) return TVCW_ERR_FORMAT;
  uint64_t len = read_u64(src + 8);
  if (len % elem != 0 || len > (uint64_t)INT64_MAX || src[6] > 1) return TVCW_ERR_FORMAT;
  return (int64_t)len;
}

/* Decode one rANS plane of `count` symbols into dst[0], dst[stride], ...; returns bytes of src consumed or < 0. */
static int64_t decode_rans_plane(const uint8_t* src, size_t avail, uint8_t* dst, size_t stride, size_t count) {
  uint8_t symbols[256];
  uint32_t freq[256], cum[257];
  if (avail < 2) return TVCW_ERR_TRUNCATED;
  uint32_t n = read_u16(src);
  size_t pos = 2;
  if (n == 0 || n > 256) return TVCW_ERR_FORMAT;
  if (avail < pos + 3u * n + 4u) return TVCW_ERR_TRUNCATED;
  cum[0] = 0;
  for (uint32_t i = 0; i < n; ++i) {
    symbols[i] = src[pos];
    freq[i] = read_u16(src + pos + 1);
    /* Each symbol once, ascending, nonzero frequency: as the encoder writes the table. The Python decoder
     * requires the same, so both accept exactly the same blobs. */
    if (freq[i] == 0 || (i > 0 && symbols[i] <= symbols[i - 1])) return TVCW_ERR_FORMAT;
    cum[i + 1] = cum[i] + freq[i];
    pos += 3;
  }
  if (cum[n] != TVCW_PROB_SCALE) return TVCW_ERR_FORMAT;
  uint32_t m = read_u32(src + pos);
  pos += 4;
  if (avail - pos < m) return TVCW_ERR_TRUNCATED;
  const uint8_t* stream = src + pos;
  const uint8_t* end = stream + m;
  if (m < 4) return TVCW_ERR_FORMAT;
  uint32_t x = read_u32(stream);
  stream += 4;
  for (size_t i = 0; i < count; ++i) {
    uint32_t slot = x & (TVCW_PROB_SCALE - 1);
    uint32_t lo = 0, hi = n; /* the last i with cum[i] <= slot */
    while (hi - lo > 1) {
      uint32_t mid = (lo + hi) / 2;
      if (cum[mid] <= slot) lo = mid; else hi = mid;
    }
    dst[i * stride] = symbols[lo];
    x = freq[lo] * (x >> TVCW_PROB_BITS) + slot - cum[lo];
    while (x < TVCW_RANS_L) {
      if (stream == end) return TVCW_ERR_TRUNCATED;
      x = (x << 8) | *stream++;
    }
  }
  return (int64_t)(pos + m);
}

/* Decode one plane (stored or rANS) of `count` bytes into dst[0], dst[stride], ...; returns bytes consumed. */
static int64_t decode_plane(const uint8_t* src, size_t avail, uint8_t* dst, size_t stride, size_t count) {
  if (avail < 1) return TVCW_ERR_TRUNCATED;
  if (src[0] == 0) {
    if (avail - 1 < count) return TVCW_ERR_TRUNCATED;
    for (size_t i = 0; i < count; ++i) dst[i * stride] = src[1 + i];
    return (int64_t)(1 + count);
  }
  if (src[0] != 1) return TVCW_ERR_FORMAT;
  int64_t used = decode_rans_plane(src + 1, avail - 1, dst, stride, count);
  return used < 0 ? used : used + 1;
}

int64_t tvcw_decode(const uint8_t* src, size_t src_len, uint8_t* dst, size_t dst_cap) {
  int64_t len = tvcw_decoded_size(src, src_len);
  if (len < 0) return len;
  if ((uint64_t)len > dst_cap) return TVCW_ERR_CAPACITY;
  size_t elem = src[5], count = (size_t)len / elem, pos = TVCW_HEADER;
  if (src[6] == 1) {
    /* Palette: decode the indices into the last `count` bytes of dst, then expand them front to back; element
     * i (bytes [i*E, i*E+E)) never overwrites an index j > i, which sits at count*(E-1) + j. */
    if (src_len - pos < 2) return TVCW_ERR_TRUNCATED;
    uint32_t n = read_u16(src + pos);
    const uint8_t* palette = src + pos + 2;
    pos += 2 + (size_t)n * elem;
    if (n == 0 || n > 256) return TVCW_ERR_FORMAT;
    if (pos > src_len) return TVCW_ERR_TRUNCATED;
    uint8_t* indices = dst + (size_t)len - count;
    int64_t used = decode_plane(src + pos, src_len - pos, indices, 1, count);
    if (used < 0) return used;
    pos += (size_t)used;
    for (size_t i = 0; i < count; ++i) {
      uint8_t index = indices[i];
      if (index >= n) return TVCW_ERR_FORMAT;
      memmove(dst + i * elem, palette + (size_t)index * elem, elem);
    }
  } else {
    for (size_t plane = 0; plane < elem; ++plane) {
      int64_t used = decode_plane(src + pos, src_len - pos, dst + plane, elem, count);
      if (used < 0) return used;
      pos += (size_t)used;
    }
  }
  return pos == src_len ? len : TVCW_ERR_FORMAT;
}
