/* tvmcompress weight codec: decoder of the blobs written by tvmcompress/weight_codec.py (format "TVCW" v1).
 *
 * A blob is a byte-shuffled (planes of equal-significance bytes, as element size says), per-plane
 * order-0 rANS coded (or stored) copy of one byte string; or, for arrays with at most 256 distinct elements
 * (clustered weights), a palette of those elements and one plane of 1-byte indices. Little-endian throughout.
 *
 *   header:  "TVCW" | u8 version (1) | u8 element size E (1, 2, 4 or 8) | u8 layout | u8 0 | u64 decoded length L
 *   layout 0 (planes):  E planes, plane p holding byte p of every element (L / E bytes each)
 *   layout 1 (palette): u16 n | n x E bytes of distinct elements | one plane of L / E indices into them
 *   a plane:  u8 method 0 (stored): the raw bytes
 *             u8 method 1 (rANS):   u16 n | n x (u8 symbol, u16 frequency; frequencies sum to 1 << 14)
 *                                   | u32 m | m bytes of rANS stream (32-bit state, byte renormalization)
 *
 * No allocation, no libc beyond memcpy: usable on a microcontroller. Plain C99.
 */
#ifndef TVMCOMPRESS_WEIGHT_CODEC_H_
#define TVMCOMPRESS_WEIGHT_CODEC_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TVCW_OK 0
#define TVCW_ERR_FORMAT (-1)    /* not a TVCW v1 blob, or a corrupt one */
#define TVCW_ERR_TRUNCATED (-2) /* src ends before the blob does */
#define TVCW_ERR_CAPACITY (-3)  /* dst is smaller than the decoded length */

/* Decoded length of the blob in src (from its header), or a negative TVCW_ERR_* code. */
int64_t tvcw_decoded_size(const uint8_t* src, size_t src_len);

/* Decode the blob in src into dst (capacity dst_cap). Returns the decoded length or a negative TVCW_ERR_*.
 * Uses about 2 KiB of stack: no slot-to-symbol table (16 KiB); each symbol is found by a binary search over
 * the plane's at most 256 cumulative frequencies. */
int64_t tvcw_decode(const uint8_t* src, size_t src_len, uint8_t* dst, size_t dst_cap);

/* "TVCW": how a loader tells a coded blob from raw bytes. */
int tvcw_is_blob(const uint8_t* src, size_t src_len);

#ifdef __cplusplus
}
#endif

#endif /* TVMCOMPRESS_WEIGHT_CODEC_H_ */
