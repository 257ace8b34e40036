// Every CUDA op of framework/cuda/ops.h (norm, activation, rope, softmax, cross-entropy, AdamW,
// casts) against its CPU op, forward and backward, each with its own tolerance (normalised max
// error). The GPU reduces in another order and fuses multiply-adds, and its expf is not glibc's, so
// most ops agree to rounding rather than bit for bit; casts and pure copies must agree exactly.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>

#include "framework/attention.h"
#include "framework/cuda/attention.h"
#include "framework/cuda/ops.h"
#include "framework/kernels/cast.h"
#include "framework/ops.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

class GpuOps : public GpuTest {};

TEST_F(GpuOps, RMSNorm) {
  for (int64_t D : {64, 192, 1000, 7168}) {
    const int64_t N = 300;
    auto x = randn(size_t(N * D), 1), w = randn(size_t(D), 2), dy = randn(size_t(N * D), 3);
    std::vector<float> y(size_t(N * D)), rstd(static_cast<size_t>(N)), dx(size_t(N * D), 0.5f), dw(size_t(D), 0.25f);
    rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, 1e-6f);
    rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, D, /*accumulate_dx=*/true);

    auto dx_d = to_device(std::vector<float>(size_t(N * D), 0.5f));
    auto dw_d = to_device(std::vector<float>(static_cast<size_t>(D), 0.25f));
    auto x_d = to_device(x), w_d = to_device(w), dy_d = to_device(dy);
    cuda::DeviceBuffer<float> y_d(N * D), rstd_d(N);
    cuda::rmsnorm_forward(y_d.get(), rstd_d.get(), x_d.get(), w_d.get(), N, D, 1e-6f);
    cuda::rmsnorm_backward(dx_d.get(), dw_d.get(), dy_d.get(), x_d.get(), w_d.get(), rstd_d.get(), N, D, true);
    expect_close(to_host(y_d), y, 1e-5, "y");
    expect_close(to_host(rstd_d), rstd, 1e-5, "rstd");
    expect_close(to_host(dx_d), dx, 1e-4, "dx");
    expect_close(to_host(dw_d), dw, 1e-4, "dw");
  }
}

TEST_F(GpuOps, SwiGLU) {
  const int64_t n = 1 << 20;
  auto g = randn(size_t(n), 4, 3.f), u = randn(size_t(n), 5), dh = randn(size_t(n), 6);
  std::vector<float> h(static_cast<size_t>(n)), dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
  swiglu_forward(h.data(), g.data(), u.data(), n);
  swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), n);
  auto g_d = to_device(g), u_d = to_device(u), dh_d = to_device(dh);
  cuda::DeviceBuffer<float> h_d(n), dg_d(n), du_d(n);
  cuda::swiglu_forward(h_d.get(), g_d.get(), u_d.get(), n);
  cuda::swiglu_backward(dg_d.get(), du_d.get(), dh_d.get(), g_d.get(), u_d.get(), n);
  expect_close(to_host(h_d), h, 1e-6, "h");
  expect_close(to_host(dg_d), dg, 1e-6, "dg");
  expect_close(to_host(du_d), du, 1e-6, "du");
}

TEST_F(GpuOps, RoPE) {
  const int64_t B = 3, T = 40, H = 4;
  const int dim = 64, nope = 128, d = nope + dim;
  std::vector<float> cos(size_t(T * dim / 2)), sin(size_t(T * dim / 2));
  rope_tables(cos.data(), sin.data(), T, dim, 10000.0);
  auto x = randn(size_t(B * T * H * d), 7);
  auto cos_d = to_device(cos), sin_d = to_device(sin);
  for (bool backward : {false, true}) {
    std::vector<float> y = x;
    rope_apply(y.data() + nope, cos.data(), sin.data(), B, T, H, H * d, d, dim, backward);
    auto y_d = to_device(x);
    cuda::rope_apply(y_d.get() + nope, cos_d.get(), sin_d.get(), B, T, H, H * d, d, dim, backward);
    expect_close(to_host(y_d), y, 1e-6, backward ? "rope backward" : "rope forward");
  }
  // The shared rope key of MLA: one head inside rows of another stride.
  const int64_t C = 96 + dim;
  auto k = randn(size_t(B * T * C), 8);
  std::vector<float> kr = k;
  rope_apply(kr.data() + 96, cos.data(), sin.data(), B, T, 1, C, 0, dim, false);
  auto k_d = to_device(k);
  cuda::rope_apply(k_d.get() + 96, cos_d.get(), sin_d.get(), B, T, 1, C, 0, dim, false);
  expect_close(to_host(k_d), kr, 1e-6, "rope on k_pe");
}

TEST_F(GpuOps, SoftmaxFullAndCausal) {
  for (int64_t V : {7, 256, 5000}) {
    const int64_t N = 64;
    auto x = randn(size_t(N * V), 9, 3.f), dy = randn(size_t(N * V), 10);
    for (bool causal : {false, true}) {
      const int64_t q0 = causal ? V - N : 0;  // the last N queries of a causal block over V keys
      if (causal && q0 < 0) continue;
      std::vector<float> y(size_t(N * V)), lse(static_cast<size_t>(N)), dx(size_t(N * V));
      softmax_forward(y.data(), lse.data(), x.data(), N, V, causal, q0);
      softmax_backward(dx.data(), y.data(), dy.data(), N, V, causal, q0);
      auto x_d = to_device(x), dy_d = to_device(dy);
      cuda::DeviceBuffer<float> y_d(N * V), lse_d(N), dx_d(N * V);
      cuda::softmax_forward(y_d.get(), lse_d.get(), x_d.get(), N, V, causal, q0);
      cuda::softmax_backward(dx_d.get(), y_d.get(), dy_d.get(), N, V, causal, q0);
      expect_close(to_host(y_d), y, 1e-5, "softmax");
      expect_close(to_host(lse_d), lse, 1e-5, "lse");
      expect_close(to_host(dx_d), dx, 1e-5, "softmax backward");
    }
  }
}

TEST_F(GpuOps, CrossEntropy) {
  const int64_t N = 200, V = 32000;
  auto logits = randn(size_t(N * V), 11, 2.f);
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) t[n] = int32_t((n * 7919) % V);
  std::vector<float> losses(static_cast<size_t>(N)), lse(static_cast<size_t>(N)), d(size_t(N * V));
  cross_entropy_forward(losses.data(), lse.data(), logits.data(), t.data(), N, V);
  cross_entropy_backward(d.data(), logits.data(), lse.data(), t.data(), 1.f / float(N), N, V);
  auto l_d = to_device(logits);
  auto t_d = to_device(t);
  cuda::DeviceBuffer<float> losses_d(N), lse_d(N);
  cuda::cross_entropy_forward(losses_d.get(), lse_d.get(), l_d.get(), t_d.get(), N, V);
  expect_close(to_host(losses_d), losses, 1e-5, "losses");
  expect_close(to_host(lse_d), lse, 1e-6, "lse");
  // In place, as the LM head uses it.
  cuda::cross_entropy_backward(l_d.get(), l_d.get(), lse_d.get(), t_d.get(), 1.f / float(N), N, V);
  expect_close(to_host(l_d), d, 1e-5, "dlogits");
}

// The integer ranks equal the CPU's exactly, ties (rounded logits) included.
TEST_F(GpuOps, TargetRanks) {
  const int64_t N = 300, V = 5000;
  auto logits = randn(size_t(N * V), 15, 2.f);
  for (float& x : logits) x = std::round(x * 4.f) / 4.f;
  std::vector<int32_t> t(static_cast<size_t>(N)), ranks(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) t[n] = int32_t((n * 7919) % V);
  target_ranks(ranks.data(), logits.data(), t.data(), N, V);
  auto l_d = to_device(logits);
  auto t_d = to_device(t);
  cuda::DeviceBuffer<int32_t> ranks_d(N);
  cuda::target_ranks(ranks_d.get(), l_d.get(), t_d.get(), N, V);
  EXPECT_EQ(to_host(ranks_d), ranks);
}

// The hit marks of ranks: exactly the CPU's.
TEST_F(GpuOps, Top1Hits) {
  const int64_t n = 10000;
  std::vector<int32_t> ranks(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ranks[i] = int32_t((i * 7919) % 5);
  std::vector<float> hits(static_cast<size_t>(n));
  top1_hits(hits.data(), ranks.data(), n);
  auto r_d = to_device(ranks);
  cuda::DeviceBuffer<float> h_d(n);
  cuda::top1_hits(h_d.get(), r_d.get(), n);
  EXPECT_EQ(to_host(h_d), hits);
}

TEST_F(GpuOps, AdamW) {
  const int64_t n = 100000;
  auto w = randn(size_t(n), 12), m = randn(size_t(n), 13, 0.01f), g = randn(size_t(n), 14);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 1e-4f * float(i % 97);
  kern::AdamWStep s;
  s.beta1 = 0.9f, s.beta2 = 0.95f, s.eps = 1e-8f, s.bc2 = 0.0975f, s.step_size = 3e-4f / 0.19f, s.decay = 0.99997f,
  s.grad_scale = 0.8f;
  auto w_d = to_device(w), m_d = to_device(m), v_d = to_device(v), g_d = to_device(g);
  adamw_update(w.data(), m.data(), v.data(), g.data(), n, s);
  cuda::adamw_update(w_d.get(), m_d.get(), v_d.get(), g_d.get(), n, s);
  expect_close(to_host(w_d), w, 1e-6, "w");
  expect_close(to_host(m_d), m, 1e-6, "m");
  expect_close(to_host(v_d), v, 1e-6, "v");
}

TEST_F(GpuOps, CastsAreExact) {
  auto x = randn(size_t(1 << 16), 15, 100.f);
  x[0] = std::nanf(""), x[1] = INFINITY, x[2] = -0.f, x[3] = 1.f + std::ldexp(1.f, -8);  // a tie
  std::vector<uint16_t> b(x.size());
  cast_f32_to_bf16(b.data(), x.data(), int64_t(x.size()));
  auto x_d = to_device(x);
  cuda::DeviceBuffer<uint16_t> b_d(int64_t(x.size()));
  cuda::cast_f32_to_bf16(b_d.get(), x_d.get(), int64_t(x.size()));
  EXPECT_EQ(to_host(b_d), b);
  cuda::DeviceBuffer<float> back_d(int64_t(x.size()));
  cuda::cast_bf16_to_f32(back_d.get(), b_d.get(), int64_t(x.size()));
  std::vector<float> back = to_host(back_d);
  for (size_t i = 1; i < x.size(); ++i) EXPECT_EQ(back[i], kern::round_bf16(x[i])) << i;
  EXPECT_TRUE(std::isnan(back[0]));
}

// MLA decoding over the latent KV cache: tokens of different lengths in one call, against the CPU op
// (the same row function; the GPU sums the dot products and the output in another order).
TEST_F(GpuOps, LatentAttention) {
  const int64_t n = 5, H = 6, L = 64, C = L + 16, slots = 5, P = 300;
  auto q = randn(size_t(n * H * C), 11), cache = randn(size_t(slots * P * C), 12);
  std::vector<int64_t> offset, length;
  for (int64_t i = 0; i < n; ++i) {
    offset.push_back(((i * 3) % slots) * P * C);
    length.push_back(1 + (i * 71) % P);
  }
  const int64_t max_len = *std::max_element(length.begin(), length.end());
  std::vector<float> o(size_t(n * H * L));
  latent_attention(o.data(), q.data(), cache.data(), offset.data(), length.data(), n, H, C, L, max_len, 0.11f);
  auto q_d = to_device(q), cache_d = to_device(cache);
  auto offset_d = to_device(offset), length_d = to_device(length);
  cuda::DeviceBuffer<float> o_d(n * H * L);
  cuda::latent_attention(o_d.get(), q_d.get(), cache_d.get(), offset_d.get(), length_d.get(), n, H, C, L, max_len,
                         0.11f);
  expect_close(to_host(o_d), o, 1e-5, "o");
}

// The element-wise bf16 rounding: exact.
TEST_F(GpuOps, Bf16Round) {
  const int64_t n = 1 << 16;
  auto x = randn(size_t(n), 13, 100.f);
  std::vector<float> y(static_cast<size_t>(n));
  bf16_round(y.data(), x.data(), n);
  auto x_d = to_device(x);
  cuda::DeviceBuffer<float> y_d(n);
  cuda::bf16_round(y_d.get(), x_d.get(), n);
  EXPECT_EQ(to_host(y_d), y);
}

