// The CPU ops (framework/ops.h) over whole tensors: each equals its row kernel applied row by row
// (the launchers cover every row once, with the right pointers), and none depends on the number of
// threads, bit for bit (RMSNorm's weight gradient excepted: it sums one partial per thread). The
// kernels' math is tested in test_framework_kernels.cpp; the CUDA ops are compared with these in
// tests/gpu.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "framework/kernels/rows.h"
#include "framework/ops.h"
#include "framework/threads.h"
#include "tests/unit/test_random.h"

using namespace moe;

namespace {

using moe::test::randn;

// Runs body() with 1 and then 3 threads and checks that it produced the same bits.
template <class F>
void same_on_any_thread_count(F body) {
  set_num_threads(1);
  auto a = body();
  set_num_threads(3);
  auto b = body();
  set_num_threads(0);
  EXPECT_EQ(a, b);
}

}  // namespace

TEST(Ops, RMSNormRowsAndThreads) {
  const int64_t N = 67, D = 24;
  auto x = randn(size_t(N * D), 1), w = randn(size_t(D), 2), dy = randn(size_t(N * D), 3);
  same_on_any_thread_count([&] {
    std::vector<float> y(size_t(N * D)), rstd(static_cast<size_t>(N)), dx(size_t(N * D), 2.f), dw(size_t(D), 1.f);
    rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f);
    rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, D, /*accumulate_dx=*/true);
    // Row 40 by hand.
    kern::SerialRow one;
    std::vector<float> y40(static_cast<size_t>(D)), dx40(size_t(D), 2.f), dwr(size_t(D), 0.f);
    float r40;
    kern::rmsnorm_row_forward(one, y40.data(), &r40, x.data() + 40 * D, w.data(), D, 1e-5f);
    kern::rmsnorm_row_backward(one, dx40.data(), dwr.data(), dy.data() + 40 * D, x.data() + 40 * D, w.data(), r40, D,
                               true);
    for (int64_t i = 0; i < D; ++i) {
      EXPECT_EQ(y[40 * D + i], y40[i]);
      EXPECT_EQ(dx[40 * D + i], dx40[i]);
    }
    // dw = 1 + sum over rows.
    for (int64_t i = 0; i < D; ++i) {
      double s = 1;
      for (int64_t n = 0; n < N; ++n) s += dy[n * D + i] * x[n * D + i] * rstd[n];
      EXPECT_NEAR(dw[i], s, 1e-4 * std::max(1.0, std::abs(s)));
    }
    // dw's partials are per thread (summed in thread order): deterministic for a thread count,
    // not across counts, so it is compared above with a tolerance only.
    y.insert(y.end(), dx.begin(), dx.end());
    return y;
  });
}

TEST(Ops, SoftmaxAndCrossEntropyRows) {
  const int64_t N = 19, V = 31;
  auto x = randn(size_t(N * V), 4, 2.f), dy = randn(size_t(N * V), 5);
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) t[n] = int32_t((n * 7) % V);
  same_on_any_thread_count([&] {
    std::vector<float> y(size_t(N * V)), lse(static_cast<size_t>(N)), dx(size_t(N * V)), yc(size_t(N * V));
    std::vector<float> lsec(static_cast<size_t>(N));
    softmax_forward(y.data(), lse.data(), x.data(), N, V);
    softmax_backward(dx.data(), y.data(), dy.data(), N, V);
    softmax_forward(yc.data(), lsec.data(), x.data(), N, V, /*causal=*/true, /*q0=*/5);
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0;
      for (int64_t i = 0; i < V; ++i) sum += y[n * V + i];
      EXPECT_NEAR(sum, 1.0, 1e-5);
      // causal: row n sees 5 + n + 1 entries
      const int64_t valid = std::min<int64_t>(V, 5 + n + 1);
      double sc = 0;
      for (int64_t i = 0; i < V; ++i) {
        if (i >= valid) {
          EXPECT_EQ(yc[n * V + i], 0.f);
        }
        sc += yc[n * V + i];
      }
      EXPECT_NEAR(sc, 1.0, 1e-5);
    }
    std::vector<float> losses(static_cast<size_t>(N)), clse(static_cast<size_t>(N)), dl(size_t(N * V));
    const double mean = cross_entropy_forward(losses.data(), clse.data(), x.data(), t.data(), N, V);
    cross_entropy_backward(dl.data(), x.data(), clse.data(), t.data(), 0.25f, N, V);
    double m = 0;
    for (int64_t n = 0; n < N; ++n) {
      m += losses[n] / double(N);
      EXPECT_NEAR(losses[n], lse[n] - x[n * V + t[n]], 1e-5);
      for (int64_t i = 0; i < V; ++i)
        EXPECT_NEAR(dl[n * V + i], 0.25f * (y[n * V + i] - (i == t[n] ? 1.f : 0.f)), 1e-6);
    }
    EXPECT_NEAR(mean, m, 1e-6);
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), yc.begin(), yc.end());
    y.insert(y.end(), dl.begin(), dl.end());
    return y;
  });
}

TEST(Ops, RoPEForwardThenBackwardIsIdentity) {
  const int64_t B = 2, T = 5, H = 3;
  const int dim = 8, nope = 4, d = nope + dim;  // rope dims after nope dims in each head, as in MLA
  std::vector<float> cos(size_t(T * dim / 2)), sin(size_t(T * dim / 2));
  rope_tables(cos.data(), sin.data(), T, dim, 10000.0);
  EXPECT_FLOAT_EQ(cos[0], 1.f);
  EXPECT_NEAR(sin[1 * dim / 2 + 0], std::sin(1.0), 1e-6);  // t = 1, i = 0: angle 1
  auto x = randn(size_t(B * T * H * d), 6);
  same_on_any_thread_count([&] {
    std::vector<float> y = x;
    rope_apply(y.data() + nope, cos.data(), sin.data(), B, T, H, H * d, d, dim, false);
    for (int64_t r = 0; r < B * T * H; ++r)
      for (int i = 0; i < nope; ++i) EXPECT_EQ(y[r * d + i], x[r * d + i]);  // nope dims untouched
    std::vector<float> z = y;
    rope_apply(z.data() + nope, cos.data(), sin.data(), B, T, H, H * d, d, dim, true);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(z[i], x[i], 1e-5);  // a rotation: R^T R = I
    return y;
  });
}

// Multi-tensor AdamW: segments of a flat buffer (with gaps, an empty one, decay on some) in one call
// equal, bit for bit, one adamw_update per segment with its decay; elements outside every segment
// are untouched. The GPU's one launch maps flat index i to its segment by kern::segment_of; the
// same mapping, walked here over every i, must visit each segment element exactly once.
TEST(Ops, AdamWOverSegmentsIsTheLoopOverSegments) {
  const int64_t n = 9000;
  // Gaps between segments, an empty one, decay on some.
  const std::vector<kern::AdamWSegment> segs{{0, 900, true}, {1000, 0, true}, {1000, 3000, false}, {4100, 4000, true},
                                             {8999, 1, false}};
  auto w0 = randn(size_t(n), 9), g = randn(size_t(n), 10), m0 = randn(size_t(n), 11, 0.1f);
  std::vector<float> v0(static_cast<size_t>(n), 0.3f);
  kern::AdamWStep s;
  s.step_size = 1e-3f, s.decay = 0.99f, s.bc2 = 0.1f, s.grad_scale = 0.5f;
  std::vector<float> w = w0, m = m0, v = v0;
  adamw_update_segments(w.data(), m.data(), v.data(), g.data(), segs.data(), int64_t(segs.size()), s);
  std::vector<float> we = w0, me = m0, ve = v0;
  for (const kern::AdamWSegment& sg : segs) {
    kern::AdamWStep st = s;
    st.decay = sg.decay ? s.decay : 1.f;
    for (int64_t j = sg.begin; j < sg.begin + sg.n; ++j)
      kern::adamw_update(&we[size_t(j)], &me[size_t(j)], &ve[size_t(j)], g[size_t(j)], st);
  }
  EXPECT_EQ(w, we);
  EXPECT_EQ(m, me);
  EXPECT_EQ(v, ve);
  EXPECT_EQ(w[950], w0[950]) << "a gap between segments is untouched";

  std::vector<int64_t> start{0};
  for (const kern::AdamWSegment& sg : segs) start.push_back(start.back() + sg.n);
  std::vector<int> visits(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < start.back(); ++i) {
    const int64_t seg = kern::segment_of(start.data(), int64_t(segs.size()), i);
    ASSERT_LT(i - start[size_t(seg)], segs[size_t(seg)].n) << "flat index " << i << " in segment " << seg;
    ++visits[size_t(segs[size_t(seg)].begin + i - start[size_t(seg)])];
  }
  for (const kern::AdamWSegment& sg : segs)
    for (int64_t j = sg.begin; j < sg.begin + sg.n; ++j) EXPECT_EQ(visits[size_t(j)], 1) << j;
}

TEST(Ops, AdamWAndCastsElementwise) {
  const int64_t n = 50000;
  auto w0 = randn(size_t(n), 7), g = randn(size_t(n), 8);
  kern::AdamWStep s;
  s.step_size = 1e-3f, s.decay = 0.999f, s.bc2 = 0.05f, s.grad_scale = 0.7f;
  same_on_any_thread_count([&] {
    std::vector<float> w = w0, m(size_t(n), 0.1f), v(size_t(n), 0.2f);
    adamw_update(w.data(), m.data(), v.data(), g.data(), n, s);
    float we = w0[123], me = 0.1f, ve = 0.2f;
    kern::adamw_update(&we, &me, &ve, g[123], s);
    EXPECT_EQ(w[123], we);
    std::vector<uint16_t> b(static_cast<size_t>(n));
    std::vector<float> back(static_cast<size_t>(n));
    cast_f32_to_bf16(b.data(), w.data(), n);
    cast_bf16_to_f32(back.data(), b.data(), n);
    for (int64_t i = 0; i < n; i += 997) EXPECT_EQ(back[i], kern::round_bf16(w[i]));
    w.insert(w.end(), back.begin(), back.end());
    return w;
  });
}

// target_ranks against the definition: sort the ids by (logit descending, id ascending); the rank
// is the target's position. Rounded logits make ties common.
TEST(Ops, TargetRanksMatchSortedOrder) {
  const int64_t N = 37, V = 50;
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(N * V));
  for (float& v : x) v = std::round(nd(gen) * 2.f) / 2.f;
  std::vector<int32_t> t(static_cast<size_t>(N)), ranks(static_cast<size_t>(N), -1);
  for (int64_t n = 0; n < N; ++n) t[n] = int32_t((n * 13) % V);
  target_ranks(ranks.data(), x.data(), t.data(), N, V);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int32_t> order(static_cast<size_t>(V));
    for (int32_t i = 0; i < V; ++i) order[i] = i;
    const float* row = x.data() + n * V;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    const int32_t expected = int32_t(std::find(order.begin(), order.end(), t[n]) - order.begin());
    EXPECT_EQ(ranks[n], expected) << "row " << n;
  }
  // The arg-max is rank 0, a first-place tie goes to the lower id, the minimum is V-1.
  std::vector<float> row = {1.f, 3.f, 3.f, -2.f};
  std::vector<int32_t> targets = {1, 2, 3, 0}, r(4);
  std::vector<float> rows;
  for (int i = 0; i < 4; ++i) rows.insert(rows.end(), row.begin(), row.end());
  target_ranks(r.data(), rows.data(), targets.data(), 4, 4);
  EXPECT_EQ(r, (std::vector<int32_t>{0, 1, 3, 2}));
}

// top1_hits marks exactly the rank-0 targets; their sum is the hit count.
TEST(Ops, Top1HitsMarkRankZero) {
  const std::vector<int32_t> ranks = {0, 3, 0, 1, 255, 0};
  std::vector<float> hits(ranks.size(), -1.f);
  top1_hits(hits.data(), ranks.data(), int64_t(ranks.size()));
  EXPECT_EQ(hits, (std::vector<float>{1.f, 0.f, 1.f, 0.f, 0.f, 1.f}));
  EXPECT_EQ(sum(hits.data(), int64_t(hits.size())), 3.0);
}
