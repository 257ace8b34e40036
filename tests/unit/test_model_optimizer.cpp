// The optimizer as the model uses it (framework/optimizer.h over a ParamStore): the gradient norm
// of the trainable parameters, and gradient accumulation. AdamW and the schedules themselves are
// tested in test_framework_optimizer.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/rng.h"
#include "framework/threads.h"
#include "model/model.h"

using namespace moe;

TEST(GradNorm, IsL2OverTrainableGradients) {
  ParamStore ps;
  int a = ps.add("a", {2}, Init::Zeros);
  int b = ps.add("b", {1}, Init::Zeros, 0.f, false, /*trainable=*/false);
  ps.allocate();
  ps.grad(a).f32()[0] = 3.f;
  ps.grad(a).f32()[1] = 4.f;
  ps.grad(b).f32()[0] = 100.f;
  EXPECT_DOUBLE_EQ(grad_norm(ps), 5.0);
}

// Gradient accumulation: two half batches with loss scale 1/2 give the gradient of the full batch.
TEST(GradAccumulation, TwoHalfBatchesEqualOneFullBatch) {
  set_num_threads(2);
  ModelConfig c;
  c.vocab_size = 64; c.hidden = 16; c.layers = 2; c.dense_layers = 1; c.dense_inter = 24; c.heads = 2;
  c.q_lora_rank = 8; c.kv_lora_rank = 8; c.qk_nope_dim = 4; c.qk_rope_dim = 4; c.v_head_dim = 4;
  c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 8;
  c.router.aux_loss_coef = 0.01; c.router.z_loss_coef = 0.001;
  const int64_t B = 4, T = 8;
  std::vector<int32_t> ids(B * T), tgt(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    ids[i] = int32_t(rng_bits(4, 1, i) % 64);
    tgt[i] = int32_t(rng_bits(4, 2, i) % 64);
  }
  DeepSeekV3 full(c), half(c);
  full.params().initialize(9);
  half.params().initialize(9);
  full.params().zero_grads();
  full.forward(ids.data(), tgt.data(), B, T);
  full.backward(1.f);
  half.params().zero_grads();
  for (int part = 0; part < 2; ++part) {
    half.forward(ids.data() + part * (B / 2) * T, tgt.data() + part * (B / 2) * T, B / 2, T);
    half.backward(0.5f);
  }
  const ParamStore &pf = full.params(), &ph = half.params();
  double max_err = 0, max_ref = 0;
  for (int64_t i = 0; i < pf.numel(); ++i) {
    max_err = std::max(max_err, double(std::fabs(pf.grads()[i] - ph.grads()[i])));
    max_ref = std::max(max_ref, double(std::fabs(pf.grads()[i])));
  }
  EXPECT_GT(max_ref, 1e-3);
  EXPECT_LT(max_err, 1e-5 * max_ref + 1e-7);
  // Expert loads add up the same way.
  for (int64_t i = 0; i < full.expert_load().numel(); ++i)
    EXPECT_EQ(full.expert_load().f32()[i], half.expert_load().f32()[i]);
}
