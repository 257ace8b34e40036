// FP8 GEMM operands (framework/kernels/fp8_operand.h), run on the CPU the way the GPU runs them
// (one call per code or scale, in any order), against precision.h's fp8_quantize: every code is the
// CPU's code of the same element, every scale the CPU's scale of its tile, so code * scale is the
// CPU's fake-quantised value bit for bit; padding codes are +0, padding scales 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "framework/kernels/fp8_operand.h"
#include "framework/precision.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::kern::f32_bits;
using moe::test::randn;
using moe::test::run_shuffled;

namespace {

constexpr int64_t T = kern::kFp8Tile;


struct Case {
  int64_t R, C;
  bool transpose, blocks;
};

// The CPU tiles of x that make the operand: 1x128 / 128x128 of the stored rows.
kern::Fp8Tiles tiles_for(const Case& c) {
  const kern::Fp8Tiles g = kern::fp8_operand_tiles(c.R, c.C, c.transpose, c.blocks);
  const int64_t outer_edge = c.blocks ? T : 1;
  EXPECT_EQ(c.transpose ? g.tr : g.tc, T);
  EXPECT_EQ(c.transpose ? g.tc : g.tr, outer_edge);
  return g;
}

}  // namespace

TEST(Fp8Operand, LayoutShapes) {
  // VEC128: [ceil(K/128), round_up(outer, 4)], outer fastest.
  auto v = kern::Fp8OperandLayout::make(6, 300, false);
  EXPECT_EQ(v.ld, 384);
  EXPECT_EQ(v.scale_rows, 3);
  EXPECT_EQ(v.scale_ld, 8);
  EXPECT_EQ(v.scale_index(5, 260), 2 * 8 + 5);
  // BLK128x128: [ceil(outer/128), round_up(ceil(K/128), 4)], K blocks fastest.
  auto b = kern::Fp8OperandLayout::make(300, 640, true);
  EXPECT_EQ(b.ld, 640);
  EXPECT_EQ(b.scale_rows, 3);
  EXPECT_EQ(b.scale_ld, 8);
  EXPECT_EQ(b.scale_index(299, 639), 2 * 8 + 4);
  EXPECT_EQ(b.code_count(), 300 * 640);
  EXPECT_EQ(b.scale_count(), 24);
}

TEST(Fp8Operand, TilesMustBeTheOperands) {
  const auto L = kern::Fp8OperandLayout::make(200, 300, false);  // 200 rows of K = 300
  EXPECT_TRUE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(200, 300, 1, T), false, L));
  EXPECT_TRUE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(300, 200, T, 1), true, L));
  EXPECT_FALSE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(300, 200, 1, T), true, L));
  EXPECT_FALSE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(200, 300, T, T), false, L));
  EXPECT_FALSE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(200, 301, 1, T), false, L));
  const auto B = kern::Fp8OperandLayout::make(200, 300, true);
  EXPECT_TRUE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(200, 300, T, T), false, B));
  EXPECT_TRUE(kern::fp8_operand_tiles_match(kern::Fp8Tiles(300, 200, T, T), true, B));
}

// Forward's x (1x128) and W (128x128), dgrad's transposed W (128x128 of W^T), wgrad's transposed
// dy and x (128x1 tiles of x: 1x128 of x^T); odd sizes so every edge tile is partial, an all-zero
// tile and a tiny value.
TEST(Fp8Operand, CodesAndScalesAreTheCpusBitForBit) {
  for (const Case c : {Case{200, 300, false, false}, Case{200, 300, false, true}, Case{300, 200, true, true},
                       Case{300, 200, true, false}, Case{3, 5, false, false}, Case{3, 5, true, false},
                       Case{130, 129, true, true}}) {
    SCOPED_TRACE(::testing::Message() << c.R << "x" << c.C << (c.transpose ? " transposed" : "")
                                      << (c.blocks ? " 128x128" : " 1x128"));
    auto x = randn(size_t(c.R * c.C), 21, 3.f);
    const kern::Fp8Tiles g = tiles_for(c);
    for (int64_t r = 0; r < std::min<int64_t>(c.R, g.tr); ++r)  // the first tile: all zero
      for (int64_t k = 0; k < std::min<int64_t>(c.C, g.tc); ++k) x[size_t(r * c.C + k)] = 0.f;
    x[size_t(c.R * c.C - 1)] = 1e-30f;
    std::vector<float> xq(x.size()), tile_scales(size_t(g.count()));
    std::vector<uint8_t> codes(x.size());
    fp8_quantize(xq.data(), codes.data(), tile_scales.data(), x.data(), c.R, c.C, g.tr, g.tc);

    const auto L = kern::Fp8OperandLayout::make(c.transpose ? c.C : c.R, c.transpose ? c.R : c.C, c.blocks);
    ASSERT_TRUE(kern::fp8_operand_tiles_match(g, c.transpose, L));
    std::vector<uint8_t> op(size_t(L.code_count()), 0xAA);
    std::vector<float> sc(size_t(L.scale_count()), -1.f);
    run_shuffled(L.code_count(), [&](int64_t i) {
      op[size_t(i)] = kern::fp8_operand_code(x.data(), tile_scales.data(), g, c.transpose, L, i);
    }, 11);
    run_shuffled(L.scale_count(), [&](int64_t j) {
      sc[size_t(j)] = kern::fp8_operand_scale(tile_scales.data(), g, c.transpose, L, j);
    }, 11);

    std::vector<bool> used(sc.size(), false);
    int bad = 0;
    for (int64_t o = 0; o < L.outer; ++o)
      for (int64_t k = 0; k < L.ld; ++k) {
        const uint8_t q = op[size_t(o * L.ld + k)];
        if (k >= L.K) {
          bad += q != 0;
          continue;
        }
        const int64_t r = c.transpose ? k : o, col = c.transpose ? o : k;
        const size_t src = size_t(r * c.C + col);
        const size_t s = size_t(L.scale_index(o, k));
        used[s] = true;
        bad += q != codes[src];
        bad += f32_bits(sc[s]) != f32_bits(tile_scales[size_t(g.tile_of(r, col))]);
        bad += f32_bits(kern::e4m3_bits_to_f32(q) * sc[s]) != f32_bits(xq[src]);  // the CPU's value
      }
    EXPECT_EQ(bad, 0);
    for (size_t s = 0; s < sc.size(); ++s) {
      if (!used[s]) {
        EXPECT_EQ(sc[s], 1.f) << "padding scale " << s;
      }
    }
  }
}
