// FP8 fake quantisation in tiles, as loops over tiles and elements that a GPU can run in parallel
// (single source; the per-element math is fp8.h's). framework/precision.cpp's fp8_quantize computes
// the same values band by band on the CPU; tests/unit checks these against it bit for bit:
//   1. amax of every tile: kern::amax_bits over each row's span of the tile, maxed over its rows
//      (an integer max, so any order gives the same bits);
//   2. scale of every tile: e4m3_scale(amax);
//   3. every element: round_e4m3(x / s) * s with its tile's s (quantize_span_e4m3 of one element).
#pragma once
#include <stdint.h>

#include "framework/kernels/fp8.h"
#include "framework/kernels/hd.h"

namespace moe::kern {

// An R x C row-major matrix cut into tiles of tr x tc; edge tiles are partial. Tiles are numbered
// row-major: tile (b, t) is b * nbc + t, as the CPU's scales array.
struct Fp8Tiles {
  int64_t R = 0, C = 0, tr = 1, tc = 1, nbr = 0, nbc = 0;
  MOE_HD Fp8Tiles(int64_t R_, int64_t C_, int64_t tr_, int64_t tc_)
      : R(R_), C(C_), tr(tr_), tc(tc_), nbr((R_ + tr_ - 1) / tr_), nbc((C_ + tc_ - 1) / tc_) {}
  MOE_HD int64_t count() const { return nbr * nbc; }
  MOE_HD int64_t tile_of(int64_t r, int64_t c) const { return (r / tr) * nbc + c / tc; }
  // Elements of column tile t in one row.
  MOE_HD int64_t span(int64_t t) const { return tc < C - t * tc ? tc : C - t * tc; }
  MOE_HD int64_t band_rows(int64_t b) const { return tr < R - b * tr ? tr : R - b * tr; }
};

// amax (as f32 bits, fp8.h) of row r's span of column tile t.
MOE_HD inline uint32_t fp8_span_amax_bits(const float* x, const Fp8Tiles& g, int64_t r, int64_t t) {
  return amax_bits(x + r * g.C + t * g.tc, g.span(t));
}

// amax of a whole tile from per-row span amaxes part[r * nbc + t] (fp8_span_amax_bits), or, when
// part is null, straight from x.
MOE_HD inline uint32_t fp8_tile_amax_bits(const float* x, const uint32_t* part, const Fp8Tiles& g, int64_t tile) {
  const int64_t b = tile / g.nbc, t = tile % g.nbc, r0 = b * g.tr, r1 = r0 + g.band_rows(b);
  uint32_t m = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint32_t a = part ? part[r * g.nbc + t] : fp8_span_amax_bits(x, g, r, t);
    m = a > m ? a : m;
  }
  return m;
}

// Element i (row-major) of the fake-quantised matrix, given every tile's scale. xq may alias x.
MOE_HD inline void fp8_quantize_element(float* xq, const float* x, const float* scales, const Fp8Tiles& g, int64_t i) {
  quantize_span_e4m3(xq + i, x + i, 1, scales[g.tile_of(i / g.C, i % g.C)]);
}

}  // namespace moe::kern
