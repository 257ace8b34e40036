// The CUDA MoE ops (router, bias update, dispatch plan, permute/unpermute) against the CPU ops,
// forward and backward. Routing choices and the plan must agree exactly (the logits are spaced so
// that no two scores come within rounding of each other); values to rounding. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "framework/cuda/ops.h"
#include "framework/moe_ops.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

class GpuMoE : public GpuTest {};

// Logits of N tokens over E experts: per token a shuffled ladder 0.13 apart, so every score and
// every group score is distinct far beyond rounding.
std::vector<float> ladder_logits(int64_t N, int64_t E, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> l(size_t(N * E));
  std::vector<int> order(static_cast<size_t>(E));
  for (int64_t n = 0; n < N; ++n) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t e = 0; e < E; ++e) l[n * E + e] = -2.f + 0.13f * float(order[e]);
  }
  return l;
}

}  // namespace

TEST_F(GpuMoE, RouterForwardBackward) {
  for (bool softmax : {false, true})
    for (int groups : {1, 4}) {
      kern::RouterSpec sp;
      sp.E = 32, sp.K = 4, sp.groups = groups, sp.groups_per_token = groups > 1 ? 2 : 1, sp.softmax = softmax;
      sp.routed_scaling = 2.5f;
      const int64_t N = 512, T = 128, E = sp.E, K = sp.K;
      auto logits = ladder_logits(N, E, 1);
      std::vector<float> bias(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) bias[e] = 0.001f * float(e % 3);  // keeps the ladder's gaps
      auto dw = randn(size_t(N * K), 2), f = randn(size_t(N / T * E), 3);
      std::vector<float> s(size_t(N * E)), w(size_t(N * K)), dl(size_t(N * E));
      std::vector<int32_t> idx(size_t(N * K));
      router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), N, sp);
      kern::RouterLossGrad lg;
      lg.aux = 1e-3f, lg.z = 2e-3f, lg.tokens = N;
      router_backward(dl.data(), s.data(), logits.data(), idx.data(), dw.data(), f.data(), T, lg, N, sp);

      auto l_d = to_device(logits), b_d = to_device(bias), dw_d = to_device(dw), f_d = to_device(f);
      cuda::DeviceBuffer<float> s_d(N * E), w_d(N * K), dl_d(N * E);
      cuda::DeviceBuffer<int32_t> idx_d(N * K);
      cuda::router_forward(s_d.get(), idx_d.get(), w_d.get(), l_d.get(), b_d.get(), N, sp);
      EXPECT_EQ(to_host(idx_d), idx) << "softmax " << softmax << " groups " << groups;
      expect_close(to_host(s_d), s, 1e-6, "scores");
      expect_close(to_host(w_d), w, 1e-6, "weights");
      // Backward from the CPU's choice, so a disagreement above is not counted twice.
      auto idx_cpu_d = to_device(idx);
      auto s_cpu_d = to_device(s);
      cuda::router_backward(dl_d.get(), s_cpu_d.get(), l_d.get(), idx_cpu_d.get(), dw_d.get(), f_d.get(), T, lg, N, sp);
      expect_close(to_host(dl_d), dl, 1e-5, "dlogits");
    }
}

TEST_F(GpuMoE, BiasUpdateIsExact) {
  const int64_t E = 64;
  std::vector<float> bias(static_cast<size_t>(E)), load(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) bias[e] = 0.01f * float(e), load[e] = float((e * 37) % 11);
  load[5] = 0;
  auto b_d = to_device(bias), load_d = to_device(load);
  router_bias_update(bias.data(), load.data(), E, 1e-3f);
  cuda::router_bias_update(b_d.get(), load_d.get(), E, 1e-3f);
  EXPECT_EQ(to_host(b_d), bias);
}

TEST_F(GpuMoE, DispatchPlanPermuteAndCombine) {
  const int64_t N = 1000, K = 6, P = N * K, E = 64, D = 96;
  std::mt19937 rng(4);
  std::vector<int32_t> idx(static_cast<size_t>(P));
  for (int64_t n = 0; n < N; ++n) {  // K distinct experts per token, skewed towards low ids
    std::vector<int32_t> pick;
    while (int64_t(pick.size()) < K) {
      int32_t e = int32_t(std::min<uint32_t>(rng() % E, rng() % E));
      if (std::find(pick.begin(), pick.end(), e) == pick.end()) pick.push_back(e);
    }
    std::copy(pick.begin(), pick.end(), idx.begin() + n * K);
  }
  std::vector<int64_t> off(size_t(E + 1));
  std::vector<int32_t> slot(static_cast<size_t>(P)), pos(static_cast<size_t>(P));
  moe_dispatch_plan(off.data(), slot.data(), pos.data(), idx.data(), P, E);
  auto idx_d = to_device(idx);
  cuda::DeviceBuffer<int64_t> off_d(E + 1);
  cuda::DeviceBuffer<int32_t> slot_d(P), pos_d(P);
  cuda::moe_dispatch_plan(off_d.get(), slot_d.get(), pos_d.get(), idx_d.get(), P, E);
  EXPECT_EQ(to_host(off_d), off);
  EXPECT_EQ(to_host(slot_d), slot);
  EXPECT_EQ(to_host(pos_d), pos);

  auto x = randn(size_t(N * D), 5), ys = randn(size_t(P * D), 6), w = randn(size_t(P), 7), dy = randn(size_t(N * D), 8);
  auto dxs = randn(size_t(P * D), 9);
  std::vector<float> xs(size_t(P * D)), y(size_t(N * D)), dw(static_cast<size_t>(P)), dys(size_t(P * D));
  std::vector<float> dx(size_t(N * D), 1.f);
  moe_permute(xs.data(), x.data(), slot.data(), P, K, D);
  moe_unpermute(y.data(), ys.data(), pos.data(), w.data(), N, K, D, false);
  moe_unpermute_backward(dw.data(), dys.data(), dy.data(), ys.data(), pos.data(), w.data(), N, K, D);
  moe_permute_backward(dx.data(), dxs.data(), pos.data(), N, K, D);

  auto x_d = to_device(x), ys_d = to_device(ys), w_d = to_device(w), dy_d = to_device(dy), dxs_d = to_device(dxs);
  auto dx_d = to_device(std::vector<float>(size_t(N * D), 1.f));
  cuda::DeviceBuffer<float> xs_d(P * D), y_d(N * D), dw_d(P), dys_d(P * D);
  auto pos_cpu_d = to_device(pos), slot_cpu_d = to_device(slot);
  cuda::moe_permute(xs_d.get(), x_d.get(), slot_cpu_d.get(), P, K, D);
  cuda::moe_unpermute(y_d.get(), ys_d.get(), pos_cpu_d.get(), w_d.get(), N, K, D, false);
  cuda::moe_unpermute_backward(dw_d.get(), dys_d.get(), dy_d.get(), ys_d.get(), pos_cpu_d.get(), w_d.get(), N, K, D);
  cuda::moe_permute_backward(dx_d.get(), dxs_d.get(), pos_cpu_d.get(), N, K, D);
  EXPECT_EQ(to_host(xs_d), xs);  // a gather copies bits
  expect_close(to_host(y_d), y, 1e-6, "combine");
  expect_close(to_host(dw_d), dw, 1e-5, "combine backward: dw");
  expect_close(to_host(dys_d), dys, 1e-6, "combine backward: dys");
  expect_close(to_host(dx_d), dx, 1e-6, "gather backward");

  // The combine on outputs kept as bf16 bits (the model at bf16) against the CPU's.
  const std::vector<uint16_t> ys_bits = test::bf16_bits(ys);
  moe_unpermute_bf16(y.data(), ys_bits.data(), pos.data(), w.data(), N, K, D, false);
  moe_unpermute_backward_bf16(dw.data(), dys.data(), dy.data(), ys_bits.data(), pos.data(), w.data(), N, K, D);
  auto ysb_d = to_device(ys_bits);
  cuda::moe_unpermute_bf16(y_d.get(), ysb_d.get(), pos_cpu_d.get(), w_d.get(), N, K, D, false);
  cuda::moe_unpermute_backward_bf16(dw_d.get(), dys_d.get(), dy_d.get(), ysb_d.get(), pos_cpu_d.get(), w_d.get(), N, K,
                                    D);
  expect_close(to_host(y_d), y, 1e-6, "combine on bf16 outputs");
  expect_close(to_host(dw_d), dw, 1e-5, "combine backward on bf16 outputs: dw");
  expect_close(to_host(dys_d), dys, 1e-6, "combine backward on bf16 outputs: dys");
}
