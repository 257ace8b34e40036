// FP8 element and tile math, single source for the CPU emulation and the CUDA backend (MOE_HD).
//
// Formats (OCP 8-bit floating point, as in NVIDIA's __nv_fp8_e4m3 / __nv_fp8_e5m2):
//   E4M3 "fn": 1 sign, 4 exponent (bias 7), 3 mantissa bits. No infinities; S.1111.111 (0x7F, 0xFF)
//              is NaN, so the largest finite value is S.1111.110 = 448. Subnormals m * 2^-9.
//   E5M2:      1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE-like: S.11111.00 is +-inf,
//              S.11111.{01,10,11} NaN, largest finite 57344. Subnormals m * 2^-16.
// Encoding rounds to nearest, ties to even (as cvt.rn does). Overflow:
//   E4M3 saturates: finite values past 448 and +-inf become +-448. This is what DeepSeek-V3's and
//   Transformer Engine's casts do (cvt.rn.satfinite); with amax scaling only round-off can push a
//   value past 448, and an E4M3 NaN for it would poison a whole GEMM.
//   E5M2 follows IEEE by default (overflow -> inf, inf stays inf); saturate=true clamps like E4M3.
// Any NaN encodes to the canonical NaN 0x7F (sign dropped, as cvt does); zero keeps its sign.
//
// Fine-grained scaling (DeepSeek-V3): a tile of values shares one f32 scale = amax / 448, so the
// tile's largest magnitude maps onto E4M3's largest finite value; stored code q means q * scale.
// Activations use 1x128 tiles along the GEMM's reduction axis, weights 128x128 blocks. The backends
// own the loops over tiles (framework/precision.cpp on the CPU); the math per element is here.
#pragma once
#include <stdint.h>
#include <string.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

constexpr float kE4M3Max = 448.f;
constexpr float kE5M2Max = 57344.f;
constexpr uint8_t kFp8NaN = 0x7F;  // canonical NaN code of both formats
constexpr int kFp8Tile = 128;      // tile edge of DeepSeek-V3's scaling (1x128 and 128x128)

MOE_HD inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

MOE_HD inline float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Rounds the magnitude `a` (f32 bits, sign cleared, finite) to nearest-even in a binary format with
// `mbits` mantissa bits and exponent bias `bias`, returning (exponent field << mbits | mantissa).
// A carry out of the mantissa bumps the exponent, so the result may pass the format's largest
// code; the caller decides between saturation and infinity.
MOE_HD inline uint32_t fp8_round_magnitude(uint32_t a, int mbits, int bias) {
  const int e = int(a >> 23) - 127;  // unbiased exponent of a normal f32
  const int min_e = 1 - bias;        // exponent of the target's smallest normal
  if (e >= min_e) {
    // Normal target: drop 23 - mbits mantissa bits with round-half-to-even, then rebias.
    const int sh = 23 - mbits;
    uint32_t r = a + ((1u << (sh - 1)) - 1u) + ((a >> sh) & 1u);
    return (r >> sh) - (uint32_t(127 - bias) << mbits);
  }
  if ((a >> 23) == 0) return 0;  // f32 zero or subnormal: far below the smallest fp8 subnormal
  // Subnormal target: count units of 2^(min_e - mbits). a = M * 2^(e - 23) with M's implicit one,
  // so the count is M >> sh, rounded half to even on the dropped bits. A count of 1 << mbits is the
  // smallest normal code, which is exactly its encoding.
  const uint32_t M = (a & 0x7fffffu) | 0x800000u;
  const int sh = 23 - mbits + (min_e - e);
  if (sh > 25) return 0;  // below half the smallest subnormal (M < 2^24)
  const uint32_t q = M >> sh, rem = M & ((1u << sh) - 1u), half = 1u << (sh - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

MOE_HD inline uint8_t f32_to_e4m3_bits(float f) {
  const uint32_t u = f32_bits(f), a = u & 0x7fffffffu;
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  if (a > 0x7f800000u) return kFp8NaN;
  if (a == 0x7f800000u) return sign | 0x7E;  // +-inf saturates
  uint32_t m = fp8_round_magnitude(a, 3, 7);
  return sign | uint8_t(m > 0x7Eu ? 0x7Eu : m);
}

MOE_HD inline uint8_t f32_to_e5m2_bits(float f, bool saturate = false) {
  const uint32_t u = f32_bits(f), a = u & 0x7fffffffu;
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  if (a > 0x7f800000u) return kFp8NaN;
  if (a == 0x7f800000u) return sign | (saturate ? 0x7B : 0x7C);
  uint32_t m = fp8_round_magnitude(a, 2, 15);
  if (m > 0x7Bu) m = saturate ? 0x7Bu : 0x7Cu;
  return sign | uint8_t(m);
}

MOE_HD inline float e4m3_bits_to_f32(uint8_t c) {
  const uint32_t sign = uint32_t(c & 0x80u) << 24, exp = (c >> 3) & 0xFu, man = c & 0x7u;
  if (exp == 0xFu && man == 0x7u) return bits_f32(0x7fc00000u);
  if (exp == 0) return bits_f32(f32_bits(float(man) * 0.001953125f) | sign);  // man * 2^-9, exact
  return bits_f32(sign | ((exp + 127u - 7u) << 23) | (man << 20));
}

MOE_HD inline float e5m2_bits_to_f32(uint8_t c) {
  const uint32_t sign = uint32_t(c & 0x80u) << 24, exp = (c >> 2) & 0x1Fu, man = c & 0x3u;
  if (exp == 0x1Fu) return bits_f32(sign | (man ? 0x7fc00000u : 0x7f800000u));
  if (exp == 0) return bits_f32(f32_bits(float(man) * 1.52587890625e-05f) | sign);  // man * 2^-16
  return bits_f32(sign | ((exp + 127u - 15u) << 23) | (man << 21));
}

// What an E4M3 store + load of f gives: equal to e4m3_bits_to_f32(f32_to_e4m3_bits(f)) for every f32
// (tested), written without branches so loops over it vectorise. Normal results round in the
// integer domain (drop 20 mantissa bits, ties to even); results below 2^-6 are multiples of 2^-9,
// which (f + 2^14) - 2^14 rounds to in IEEE round-to-nearest-even (2^14's ulp is 2^-9).
MOE_HD inline float round_e4m3(float f) {
  const uint32_t u = f32_bits(f), a = u & 0x7fffffffu, sign = u & 0x80000000u;
  const uint32_t normal = (a + 0x7ffffu + ((a >> 20) & 1u)) & 0xfff00000u;
  const uint32_t sub = f32_bits((bits_f32(a) + 16384.f) - 16384.f);
  uint32_t r = a < 0x3c800000u ? sub : normal;  // 0x3c800000 = 2^-6, the smallest normal
  r = r > 0x43e00000u ? 0x43e00000u : r;        // 0x43e00000 = 448: saturate (inf included)
  return bits_f32(a > 0x7f800000u ? 0x7fc00000u : (r | sign));
}

// f32_to_e4m3_bits and e4m3_bits_to_f32 without branches, so loops over them vectorise (tested
// equal for every code and over dense sweeps of f32). The code of f is the code of round_e4m3(f),
// an E4M3 value: a normal one's exponent and top 3 mantissa bits are the code's bits (exponent
// rebiased by 127 - 7 = 120), a subnormal one is a count of 2^-9; NaN gives the canonical 0x7F.
MOE_HD inline uint8_t e4m3_encode(float f) {
  const uint32_t r = f32_bits(round_e4m3(f)), a = r & 0x7fffffffu, sign = (r >> 24) & 0x80u;
  const uint32_t normal = (a >> 20) - (120u << 3);
  const uint32_t sub = uint32_t(bits_f32(a < 0x3c800000u ? a : 0u) * 512.f);
  const uint32_t code = a < 0x3c800000u ? sub : normal;
  return uint8_t(a > 0x7f800000u ? uint32_t(kFp8NaN) : (sign | code));
}
MOE_HD inline float e4m3_decode(uint8_t c) {
  const uint32_t sign = uint32_t(c & 0x80u) << 24, em = c & 0x7Fu;
  const uint32_t normal = (em << 20) + (120u << 23);
  const uint32_t sub = f32_bits(float(em) * 0.001953125f);  // exponent field 0: em = m, value m * 2^-9
  return bits_f32(em == 0x7Fu ? 0x7fc00000u : (sign | (em < 8u ? sub : normal)));
}

// max |x[i]| over n values, as f32 bits compared as integers: for magnitudes the integer order is
// the float order, NaN patterns sort above inf (so a NaN anywhere makes the result NaN on every
// backend, where fmaxf would drop it), and an integer max reduction vectorises.
MOE_HD inline uint32_t amax_bits(const float* x, int64_t n, uint32_t m = 0) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = f32_bits(x[i]) & 0x7fffffffu;
    m = a > m ? a : m;
  }
  return m;
}

// m[i] = max(m[i], |x[i]|) in the same bit form: one row's contribution to column tiles (128x1).
MOE_HD inline void amax_bits_columns(uint32_t* m, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = f32_bits(x[i]) & 0x7fffffffu;
    m[i] = a > m[i] ? a : m[i];
  }
}

// A tile's scale from its amax: amax / 448 in f32, so the largest magnitude lands on E4M3's largest
// finite value (round-off may push it a hair past; encoding saturates). An all-zero tile, or one so
// small that amax / 448 underflows to zero, gets scale 1: its values encode to zero (or the few
// subnormal codes they round to) and nothing divides by zero. A non-finite amax (an inf or NaN in
// the tile) gives a NaN scale, so the whole tile turns to NaN: an overflow upstream is reported,
// not clipped away.
MOE_HD inline float e4m3_scale(uint32_t amax_bits) {
  if (amax_bits >= 0x7f800000u) return bits_f32(0x7fc00000u);
  const float s = bits_f32(amax_bits) / kE4M3Max;
  return s > 0.f ? s : 1.f;
}

// Quantises n values that share `scale`: xq[i] = e4m3(x[i] / scale) * scale, the value a consumer
// of the fp8 tensor sees (decode, then multiply by the scale in f32). The divide is IEEE (correctly
// rounded on the CPU and, without fast-math, on the GPU), so the codes agree bit for bit.
MOE_HD inline void quantize_span_e4m3(float* xq, const float* x, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) xq[i] = round_e4m3(x[i] / scale) * scale;
}
// The same with one scale per element (a row crossing column tiles of 128x1).
MOE_HD inline void quantize_span_e4m3(float* xq, const float* x, int64_t n, const float* scale) {
  for (int64_t i = 0; i < n; ++i) xq[i] = round_e4m3(x[i] / scale[i]) * scale[i];
}
// Codes of the same (for storage and for comparing backends bit for bit).
MOE_HD inline void encode_span_e4m3(uint8_t* q, const float* x, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) q[i] = e4m3_encode(x[i] / scale);
}
MOE_HD inline void encode_span_e4m3(uint8_t* q, const float* x, int64_t n, const float* scale) {
  for (int64_t i = 0; i < n; ++i) q[i] = e4m3_encode(x[i] / scale[i]);
}

}  // namespace moe::kern
