// latent_attention (MLA decoding over the latent KV cache): the CPU op (two GEMMs per token) and the
// row function the GPU runs per (token, head) (kern::latent_attention_row, here with one lane), both
// against a float64 softmax-attention written out naively.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/attention.h"
#include "framework/kernels/latent_attention.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::test::randn;

namespace {

struct Case {
  int64_t n = 4, H = 3, C = 20, L = 16, slots = 3, P = 50;
  std::vector<float> q, cache;
  std::vector<int64_t> offset, length;
  int64_t max_len = 0;
  float scale = 0.3f;
  Case() {
    q = randn(size_t(n * H * C), 1);
    cache = randn(size_t(slots * P * C), 2);
    for (int64_t i = 0; i < n; ++i) {
      offset.push_back((i % slots) * P * C);
      length.push_back(1 + (i * 17) % P);  // 1, 18, 35, 2: one position, and several lengths
      max_len = std::max(max_len, length.back());
    }
  }
  // o[i, h, :] in float64.
  std::vector<double> naive() const {
    std::vector<double> o(size_t(n * H * L), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const float* qi = q.data() + (i * H + h) * C;
        const float* rows = cache.data() + offset[size_t(i)];
        std::vector<double> s(static_cast<size_t>(length[size_t(i)]));
        double mx = -1e300, sum = 0;
        for (int64_t t = 0; t < length[size_t(i)]; ++t) {
          for (int64_t c = 0; c < C; ++c) s[t] += double(qi[c]) * rows[t * C + c];
          s[t] *= scale;
          mx = std::max(mx, s[t]);
        }
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (int64_t t = 0; t < length[size_t(i)]; ++t)
          for (int64_t j = 0; j < L; ++j) o[size_t((i * H + h) * L + j)] += s[t] / sum * rows[t * C + j];
      }
    return o;
  }
};

double max_error(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t k = 0; k < want.size(); ++k) err = std::max(err, std::fabs(got[k] - want[k]));
  return err;
}

}  // namespace

TEST(LatentAttention, CpuOpMatchesNaive) {
  Case c;
  std::vector<float> o(size_t(c.n * c.H * c.L), -1.f);
  latent_attention(o.data(), c.q.data(), c.cache.data(), c.offset.data(), c.length.data(), c.n, c.H, c.C, c.L,
                   c.max_len, c.scale);
  EXPECT_LT(max_error(o, c.naive()), 2e-5);  // fast exp and f32 sums
}

TEST(LatentAttention, RowFunctionMatchesNaive) {
  Case c;
  std::vector<float> o(size_t(c.n * c.H * c.L), -1.f), p(size_t(c.max_len));
  kern::SerialRow one;
  for (int64_t row = 0; row < c.n * c.H; ++row) {
    const int64_t i = row / c.H;
    kern::latent_attention_row(one, o.data() + row * c.L, p.data(), c.q.data() + row * c.C,
                               c.cache.data() + c.offset[size_t(i)], c.length[size_t(i)], c.C, c.L, c.scale);
  }
  EXPECT_LT(max_error(o, c.naive()), 2e-5);
}
