// f32 <-> bf16, one element (single source: framework/kernels/row.h). Round-to-nearest-even as
// the GPU's cvt.rn.bf16.f32 does; NaN stays a (quiet) NaN.
#pragma once
#include <stdint.h>
#include <string.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

// bf16 bit pattern from f32.
MOE_HD inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

MOE_HD inline float bf16_bits_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Rounds an f32 to the nearest bf16 value, returned as f32 (what a bf16 store + load gives).
MOE_HD inline float round_bf16(float f) { return bf16_bits_to_f32(f32_to_bf16_bits(f)); }

}  // namespace moe::kern
