// FP8 GEMM operands in the layouts cuBLASLt's block-scaled matmul reads (single source: the CUDA
// backend runs these per element, tests/unit runs them on the CPU against precision.h).
//
// A real FP8 GEMM on Hopper takes both operands "K-major" (cuBLASLt's TN format): every stored row
// holds the reduction axis K contiguously. An operand here is `outer` rows of K values:
//   codes   uint8 E4M3, [outer, ld] row-major, ld = K rounded up to 128; codes past K are zero
//           (+0), so padding the reduction axis adds exact zeros to every dot product.
//   scales  f32, one per tile, in one of two cuBLASLt scale modes:
//     VEC128_32F     one scale per row and 128 K (a 1x128 tile of the stored rows):
//                    [ceil(K/128), round_up(outer, 4)] row-major, outer fastest;
//     BLK128x128_32F one scale per 128 rows x 128 K:
//                    [ceil(outer/128), round_up(ceil(K/128), 4)] row-major, K blocks fastest.
//   (The layouts of Transformer Engine's "GEMM ready" block-scaled tensors and of PyTorch's
//   _scaled_mm with 1x128 / 128x128 scales; not yet checked on a GPU here: docs/cuda.md.)
//
// An operand comes from an f32 matrix x[R,C] (row-major) quantised in the CPU's tiles tr x tc
// (Fp8Tiles, precision.h): stored row o, position k is x[o, k] (K = C) or, transposed,
// x[k, o] (K = R). Codes are f32_to_e4m3_bits(x / s) with the tile's scale s, the codes of
// fp8_quantize, so code * s is the CPU's fake-quantised value bit for bit. The tiles must be
// the operand's: 1x128 / 128x128 of the stored rows, i.e. of x transposed when transposed.
#pragma once
#include <stdint.h>

#include "framework/kernels/fp8.h"
#include "framework/kernels/fp8_tiles.h"
#include "framework/kernels/hd.h"

namespace moe::kern {

struct Fp8OperandLayout {
  int64_t outer = 0, K = 0, ld = 0;  // codes [outer, ld]
  bool blocks = false;               // BLK128x128_32F; else VEC128_32F
  int64_t scale_rows = 0, scale_ld = 0;

  MOE_HD static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
  MOE_HD static Fp8OperandLayout make(int64_t outer, int64_t K, bool blocks) {
    Fp8OperandLayout L;
    L.outer = outer;
    L.K = K;
    L.ld = round_up(K, kFp8Tile);
    L.blocks = blocks;
    const int64_t kb = (K + kFp8Tile - 1) / kFp8Tile;
    L.scale_rows = blocks ? (outer + kFp8Tile - 1) / kFp8Tile : kb;
    L.scale_ld = blocks ? round_up(kb, 4) : round_up(outer, 4);
    return L;
  }
  MOE_HD int64_t code_count() const { return outer * ld; }
  MOE_HD int64_t scale_count() const { return scale_rows * scale_ld; }
  // Index of the scale of stored element (o, k).
  MOE_HD int64_t scale_index(int64_t o, int64_t k) const {
    return blocks ? (o / kFp8Tile) * scale_ld + k / kFp8Tile : (k / kFp8Tile) * scale_ld + o;
  }
};

// The CPU tiles of x[R,C] that are the tiles of its operand (transposed or not, blocks or not).
MOE_HD inline Fp8Tiles fp8_operand_tiles(int64_t R, int64_t C, bool transpose, bool blocks) {
  const int64_t outer_edge = blocks ? kFp8Tile : 1;
  return transpose ? Fp8Tiles(R, C, kFp8Tile, outer_edge) : Fp8Tiles(R, C, outer_edge, kFp8Tile);
}

// Whether tiles g of x[R,C] are the operand's tiles (see the top), so every stored tile has one
// CPU tile and one scale.
MOE_HD inline bool fp8_operand_tiles_match(const Fp8Tiles& g, bool transpose, const Fp8OperandLayout& L) {
  const int64_t outer_edge = L.blocks ? kFp8Tile : 1;
  const int64_t outer = transpose ? g.C : g.R, K = transpose ? g.R : g.C;
  const int64_t k_tile = transpose ? g.tr : g.tc, outer_tile = transpose ? g.tc : g.tr;
  return outer == L.outer && K == L.K && k_tile == kFp8Tile && outer_tile == outer_edge;
}

// Code i (row-major over [outer, ld]) of the operand, given every CPU tile's scale.
MOE_HD inline uint8_t fp8_operand_code(const float* x, const float* tile_scales, const Fp8Tiles& g, bool transpose,
                                       const Fp8OperandLayout& L, int64_t i) {
  const int64_t o = i / L.ld, k = i % L.ld;
  if (k >= L.K) return 0;
  const int64_t r = transpose ? k : o, c = transpose ? o : k;
  return e4m3_encode(x[r * g.C + c] / tile_scales[g.tile_of(r, c)]);
}

// Scale j (row-major over [scale_rows, scale_ld]) of the operand. Padding entries (past outer in
// VEC128, past the K blocks in BLK128x128) are never applied to a code; they hold 1.
MOE_HD inline float fp8_operand_scale(const float* tile_scales, const Fp8Tiles& g, bool transpose,
                                      const Fp8OperandLayout& L, int64_t j) {
  const int64_t row = j / L.scale_ld, col = j % L.scale_ld;
  // A representative stored element (o, k) of the tile.
  const int64_t o = L.blocks ? row * kFp8Tile : col, k = (L.blocks ? col : row) * kFp8Tile;
  if (o >= L.outer || k >= L.K) return 1.f;
  const int64_t r = transpose ? k : o, c = transpose ? o : k;
  return tile_scales[g.tile_of(r, c)];
}

}  // namespace moe::kern
