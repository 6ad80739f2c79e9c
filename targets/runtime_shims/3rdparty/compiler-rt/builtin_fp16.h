/*
 * tvmcompress runtime shim: builtin_fp16.h (included as <builtin_fp16.h> and as
 * "3rdparty/compiler-rt/builtin_fp16.h" by the TVM runtime sources shipped in the apache-tvm wheel,
 * which does not ship this header).
 *
 * Conversions between IEEE-754 binary formats given by their bit layout, as the sources call them:
 *   __truncXfYf2__<SrcT, SrcRepT, SrcSigBits, DstT, DstRepT, DstSigBits>(a)   wide -> narrow,
 *       rounded to nearest, ties to even; overflow gives infinity; NaN stays NaN (quiet).
 *   __extendXfYf2__<SrcT, SrcRepT, SrcSigBits, DstT, DstRepT, DstSigBits>(a)  narrow -> wide, exact.
 * SrcT/DstT are either the floating type itself or its unsigned bit pattern (uint16_t for half).
 * The exponent width follows from the representation width: bits - SigBits - 1.
 */
#ifndef TVMCOMPRESS_SHIM_BUILTIN_FP16_H_
#define TVMCOMPRESS_SHIM_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace tvmcompress_fp_shim {

template <typename RepT, int SigBits>
struct Layout {
  static constexpr int kBits = static_cast<int>(sizeof(RepT) * 8);
  static constexpr int kExpBits = kBits - SigBits - 1;
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr RepT kExpMax = static_cast<RepT>((RepT(1) << kExpBits) - 1);
  static constexpr RepT kSigMask = static_cast<RepT>((RepT(1) << SigBits) - 1);
  static constexpr RepT kImplicit = static_cast<RepT>(RepT(1) << SigBits);
};

template <typename To, typename From>
inline To BitCopy(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit copy needs equal sizes");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// Shifts `sig` right by `shift` (>= 1) and rounds the dropped bits to nearest, ties to even.
// `base` is added before rounding so that a carry can ripple into an exponent field.
template <typename RepT>
inline RepT ShiftRoundNearestEven(RepT sig, int shift, RepT base) {
  RepT kept = base + (sig >> shift);
  RepT dropped = sig & ((RepT(1) << shift) - 1);
  RepT half = RepT(1) << (shift - 1);
  if (dropped > half || (dropped == half && (kept & 1))) kept += 1;
  return kept;
}

}  // namespace tvmcompress_fp_shim

template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT, int DstSigBits>
inline DstT __truncXfYf2__(SrcT a) {
  using Src = tvmcompress_fp_shim::Layout<SrcRepT, SrcSigBits>;
  using Dst = tvmcompress_fp_shim::Layout<DstRepT, DstSigBits>;
  static_assert(SrcSigBits > DstSigBits && Src::kExpBits >= Dst::kExpBits, "truncation must narrow");
  constexpr int kSigDrop = SrcSigBits - DstSigBits;

  const SrcRepT bits = tvmcompress_fp_shim::BitCopy<SrcRepT>(a);
  const DstRepT sign = static_cast<DstRepT>((bits >> (Src::kBits - 1)) << (Dst::kBits - 1));
  const SrcRepT exp = (bits >> SrcSigBits) & Src::kExpMax;
  const SrcRepT frac = bits & Src::kSigMask;
  DstRepT out;

  if (exp == Src::kExpMax) {
    // Infinity keeps a zero fraction; NaN keeps its top payload bits and is made quiet.
    DstRepT payload = frac == 0 ? DstRepT(0)
                                : static_cast<DstRepT>((frac >> kSigDrop) | (SrcRepT(1) << (DstSigBits - 1)));
    out = static_cast<DstRepT>((static_cast<DstRepT>(Dst::kExpMax) << DstSigBits) | payload);
  } else {
    // value = sig * 2^(unbiased - SrcSigBits); subnormal inputs have no implicit bit.
    const SrcRepT sig = exp == 0 ? frac : (frac | Src::kImplicit);
    const long unbiased = static_cast<long>(exp == 0 ? 1 : exp) - Src::kBias;
    const long dst_exp = unbiased + Dst::kBias;
    SrcRepT rounded;
    if (sig == 0) {
      rounded = 0;
    } else if (dst_exp >= static_cast<long>(Dst::kExpMax)) {
      rounded = static_cast<SrcRepT>(Dst::kExpMax) << DstSigBits;  // overflow: infinity
    } else if (dst_exp >= 1) {
      // Normal result: the exponent field is the base, the kept fraction bits are added, and a
      // rounding carry out of the fraction correctly bumps the exponent (up to infinity).
      SrcRepT base = static_cast<SrcRepT>(dst_exp - 1) << DstSigBits;
      rounded = tvmcompress_fp_shim::ShiftRoundNearestEven<SrcRepT>(sig, kSigDrop, base);
    } else {
      // Subnormal (or zero) result: shift further by how far the exponent is below the minimum.
      const long shift = kSigDrop + (1 - dst_exp);
      if (shift > SrcSigBits + 1) {
        rounded = 0;  // below half the smallest subnormal
      } else {
        rounded = tvmcompress_fp_shim::ShiftRoundNearestEven<SrcRepT>(sig, static_cast<int>(shift), SrcRepT(0));
      }
    }
    out = static_cast<DstRepT>(rounded);
  }
  return tvmcompress_fp_shim::BitCopy<DstT>(static_cast<DstRepT>(out | sign));
}

template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT, int DstSigBits>
inline DstT __extendXfYf2__(SrcT a) {
  using Src = tvmcompress_fp_shim::Layout<SrcRepT, SrcSigBits>;
  using Dst = tvmcompress_fp_shim::Layout<DstRepT, DstSigBits>;
  static_assert(DstSigBits > SrcSigBits && Dst::kExpBits >= Src::kExpBits, "extension must widen");
  constexpr int kSigGrow = DstSigBits - SrcSigBits;

  const SrcRepT bits = tvmcompress_fp_shim::BitCopy<SrcRepT>(a);
  const DstRepT sign = static_cast<DstRepT>(static_cast<DstRepT>(bits >> (Src::kBits - 1)) << (Dst::kBits - 1));
  const SrcRepT exp = (bits >> SrcSigBits) & Src::kExpMax;
  DstRepT frac = static_cast<DstRepT>(bits & Src::kSigMask);
  DstRepT out;

  if (exp == Src::kExpMax) {
    out = (Dst::kExpMax << DstSigBits) | (frac << kSigGrow);  // infinity or NaN (payload kept)
  } else if (exp == 0) {
    if (frac == 0) {
      out = 0;
    } else {
      // Subnormal source: normalize so the leading one becomes the implicit bit.
      long unbiased = 1 - Src::kBias;
      while ((frac & (DstRepT(1) << SrcSigBits)) == 0) {
        frac <<= 1;
        --unbiased;
      }
      frac &= static_cast<DstRepT>((DstRepT(1) << SrcSigBits) - 1);
      out = (static_cast<DstRepT>(unbiased + Dst::kBias) << DstSigBits) | (frac << kSigGrow);
    }
  } else {
    const long unbiased = static_cast<long>(exp) - Src::kBias;
    out = (static_cast<DstRepT>(unbiased + Dst::kBias) << DstSigBits) | (frac << kSigGrow);
  }
  return tvmcompress_fp_shim::BitCopy<DstT>(static_cast<DstRepT>(out | sign));
}

#endif  // TVMCOMPRESS_SHIM_BUILTIN_FP16_H_
