// The single-source kernels the CUDA backend adds (framework/kernels/moves.h, fp8_tiles.h), run on
// the CPU the way the GPU runs them (one call per element, column or segment, in any order) and
// compared with plain loops: the row moves and the embedding exactly, the f64 sums under emulated
// lanes to rounding, and the tiled fp8 quantisation bit for bit with precision.cpp's fp8_quantize.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "framework/backend.h"
#include "framework/kernels/activation.h"
#include "framework/kernels/fp8_tiles.h"
#include "framework/kernels/moves.h"
#include "framework/kernels/row.h"
#include "framework/ops.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "tests/unit/lanes.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::test::Lanes;
using moe::test::LaneRow;
using moe::test::randn;
using moe::test::run_shuffled;

namespace {


bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// The element-wise ops generated from the op table (framework/backend_ops.inc): the CPU function
// and the CPU backend's method both equal the element loop, on any number of threads (aliasing
// the output with an input, as the model's residual adds do).
TEST(BackendKernels, ElementwiseOpsFromTheTable) {
  const int64_t n = 40000;  // several threads' worth at the launch grain
  const auto a = randn(size_t(n), 1), b = randn(size_t(n), 2), dh = randn(size_t(n), 3);
  std::vector<float> sum_ref(a.size()), h_ref(a.size()), dg_ref(a.size()), du_ref(a.size());
  for (int64_t i = 0; i < n; ++i) {
    sum_ref[i] = a[i] + b[i];
    h_ref[i] = kern::swiglu(a[i], b[i]);
    kern::swiglu_backward(&dg_ref[i], &du_ref[i], dh[i], a[i], b[i]);
  }
  const int threads = num_threads();
  for (int t : {1, 3}) {
    set_num_threads(t);
    std::vector<float> y = a, h(a.size()), dg(a.size()), du(a.size());
    add(y.data(), y.data(), b.data(), n);
    EXPECT_TRUE(same_bits(y, sum_ref)) << t;
    y = a;
    cpu_backend().add(y.data(), y.data(), b.data(), n);
    EXPECT_TRUE(same_bits(y, sum_ref)) << t;
    cpu_backend().swiglu_forward(h.data(), a.data(), b.data(), n);
    EXPECT_TRUE(same_bits(h, h_ref)) << t;
    swiglu_backward(dg.data(), du.data(), dh.data(), a.data(), b.data(), n);
    EXPECT_TRUE(same_bits(dg, dg_ref) && same_bits(du, du_ref)) << t;
  }
  set_num_threads(threads);
}

TEST(BackendKernels, CopyRowsWithRepeat) {
  const int64_t rows = 12, cols = 5, ld_src = 7, ld_dst = 9, rep = 3;
  auto src = randn(size_t((rows / rep) * ld_src), 1);
  std::vector<float> got(size_t(rows * ld_dst), -1.f), want = got;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) want[size_t(r * ld_dst + c)] = src[size_t((r / rep) * ld_src + c)];
  run_shuffled(rows * cols, [&](int64_t i) {
    kern::copy_rows_element(got.data(), ld_dst, src.data(), ld_src, rep, i / cols, i % cols);
  });
  EXPECT_TRUE(same_bits(got, want));  // padding between rows untouched too
}

TEST(BackendKernels, SumRowGroupsInOrder) {
  const int64_t rows = 6, cols = 5, group = 4, ld_src = 8, ld_dst = 6;
  auto src = randn(size_t(rows * group * ld_src), 2);
  std::vector<float> got(size_t(rows * ld_dst), -1.f), want = got;
  for (int64_t r = 0; r < rows; ++r)  // the CPU backend's loop
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0.f;
      for (int64_t j = 0; j < group; ++j) s += src[size_t((r * group + j) * ld_src + c)];
      want[size_t(r * ld_dst + c)] = s;
    }
  run_shuffled(rows * cols, [&](int64_t i) {
    kern::sum_row_groups_element(got.data(), ld_dst, src.data(), ld_src, group, i / cols, i % cols);
  });
  EXPECT_TRUE(same_bits(got, want));
}

TEST(BackendKernels, EmbeddingForwardAndBackwardMatchTheSerialLoops) {
  const int64_t V = 11, D = 6, N = 40;
  std::vector<int32_t> ids(static_cast<size_t>(N));
  std::mt19937 rng(3);
  for (auto& id : ids) id = int32_t(rng() % 5);  // many repeats
  auto table = randn(size_t(V * D), 4), dout = randn(size_t(N * D), 5);
  std::vector<float> out(size_t(N * D));
  run_shuffled(N * D, [&](int64_t i) { kern::embedding_forward_element(out.data(), ids.data(), table.data(), D, i); });
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(out[size_t(n * D + d)], table[size_t(ids[size_t(n)] * D + d)]);

  auto want = randn(size_t(V * D), 6), got = want;
  for (int64_t n = 0; n < N; ++n)  // the plain serial loop over tokens
    for (int64_t d = 0; d < D; ++d) want[size_t(ids[size_t(n)] * D + d)] += dout[size_t(n * D + d)];
  auto ranges = got;
  run_shuffled(D, [&](int64_t d) { kern::embedding_backward_columns(got.data(), ids.data(), dout.data(), N, D, d, d + 1); });
  EXPECT_TRUE(same_bits(got, want));  // the same additions in the same order
  // Uneven column ranges (the CPU's split), in any order: the same bits.
  const int64_t cut = D / 3;
  run_shuffled(2, [&](int64_t k) {
    kern::embedding_backward_columns(ranges.data(), ids.data(), dout.data(), N, D, k ? cut : 0, k ? D : cut);
  });
  EXPECT_TRUE(same_bits(ranges, want));
}

TEST(BackendKernels, SumSpanF64UnderLanes) {
  const int64_t n = 1000;
  auto x = randn(size_t(n), 7, 3.f);
  for (bool squares : {false, true}) {
    double want = 0;
    for (int64_t i = 100; i < 900; ++i) want += squares ? double(x[size_t(i)]) * x[size_t(i)] : double(x[size_t(i)]);
    kern::SerialRow one;
    EXPECT_NEAR(kern::sum_span_f64(one, x.data(), 100, 900, squares), want, 1e-12 * std::abs(want) + 1e-12);
    for (int width : {1, 3, 32}) {
      Lanes lanes(width);
      std::vector<double> seen(static_cast<size_t>(width));
      lanes.run([&](LaneRow& r) { seen[size_t(r.lane())] = kern::sum_span_f64(r, x.data(), 100, 900, squares); });
      for (double s : seen) {
        EXPECT_EQ(s, seen[0]) << "every lane gets the same sum";
        EXPECT_NEAR(s, want, 1e-12 * std::abs(want) + 1e-12) << "width " << width;
      }
    }
  }
}

// The GPU's three passes (span amaxes, tile scales, elements), each in shuffled order, against
// precision.cpp's band-by-band fp8_quantize: the same bits, for the three DeepSeek-V3 tilings,
// partial edge tiles, an all-zero tile and a tile with an inf.
TEST(BackendKernels, TiledFp8QuantiseMatchesTheCpuBitForBit) {
  const int64_t R = 300, C = 260;
  auto x = randn(size_t(R * C), 8, 2.f);
  for (int64_t c = 0; c < 128; ++c) x[size_t(c)] = 0.f;  // row 0, first 1x128 tile: zero
  x[size_t(5 * C + 200)] = INFINITY;                      // a non-finite tile
  x[size_t(7 * C + 3)] = 1e-30f;                          // far below its tile's scale
  for (auto [tr, tc] : {std::pair<int64_t, int64_t>{1, 128}, {128, 1}, {128, 128}, {3, 5}}) {
    std::vector<float> want(x.size());
    fp8_quantize(want.data(), nullptr, nullptr, x.data(), R, C, tr, tc);
    const kern::Fp8Tiles g(R, C, tr, tc);
    std::vector<uint32_t> part(size_t(R * g.nbc));
    run_shuffled(R * g.nbc, [&](int64_t i) {
      part[size_t(i)] = kern::fp8_span_amax_bits(x.data(), g, i / g.nbc, i % g.nbc);
    });
    std::vector<float> scales(size_t(g.count())), scales_direct(size_t(g.count()));
    run_shuffled(g.count(), [&](int64_t t) {
      scales[size_t(t)] = kern::e4m3_scale(kern::fp8_tile_amax_bits(x.data(), part.data(), g, t));
      scales_direct[size_t(t)] = kern::e4m3_scale(kern::fp8_tile_amax_bits(x.data(), nullptr, g, t));
    });
    EXPECT_TRUE(same_bits(scales, scales_direct)) << tr << "x" << tc;
    std::vector<float> got(x.size());
    run_shuffled(R * C, [&](int64_t i) { kern::fp8_quantize_element(got.data(), x.data(), scales.data(), g, i); });
    EXPECT_TRUE(same_bits(got, want)) << tr << "x" << tc;
    // In place (xq aliasing x) gives the same values.
    std::vector<float> inplace = x;
    run_shuffled(R * C, [&](int64_t i) {
      kern::fp8_quantize_element(inplace.data(), inplace.data(), scales.data(), g, i);
    });
    EXPECT_TRUE(same_bits(inplace, want)) << tr << "x" << tc << " in place";
  }
}
