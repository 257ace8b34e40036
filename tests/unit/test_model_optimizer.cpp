// AdamW, learning-rate schedules, gradient norm and gradient accumulation against independent
// references written out here in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/rng.h"
#include "framework/threads.h"
#include "model/model.h"
#include "model/optimizer.h"

using namespace moe;

TEST(LearningRate, WarmupThenCosineLinearConstant) {
  TrainConfig t;
  t.lr = 1e-3; t.min_lr = 1e-4; t.warmup = 10; t.steps = 110;
  t.schedule = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-4);       // (0+1)/10 of lr
  EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1e-3);       // warmup ends at the peak
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);      // cosine starts at the peak
  EXPECT_NEAR(learning_rate(t, 60), 5.5e-4, 1e-12);  // halfway: (lr + min_lr) / 2
  EXPECT_NEAR(learning_rate(t, 110), 1e-4, 1e-12);   // ends at min_lr
  EXPECT_NEAR(learning_rate(t, 500), 1e-4, 1e-12);   // and stays there
  t.schedule = "linear";
  EXPECT_NEAR(learning_rate(t, 35), 1e-3 - 0.25 * 9e-4, 1e-12);
  t.schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(t, 80), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 4), 5e-4);
}

// Three AdamW steps on a decayed and an undecayed parameter, against PyTorch's AdamW update
// written in double: w -= lr*wd*w; m,v moments; w -= lr/bc1 * m / (sqrt(v/bc2) + eps).
TEST(AdamW, MatchesReferenceAndSkipsDecayForNormsAndBuffers) {
  set_num_threads(1);
  ParamStore ps;
  int w = ps.add("w", {3}, Init::Normal, 1.f, /*decay=*/true);
  int g = ps.add("norm.weight", {2}, Init::Ones, 0.f, /*decay=*/false);
  int b = ps.add("bias", {2}, Init::Zeros, 0.f, /*decay=*/false, /*trainable=*/false);
  ps.allocate();
  ps.initialize(3);
  TrainConfig t;
  t.beta1 = 0.9; t.beta2 = 0.95; t.eps = 1e-8; t.weight_decay = 0.1;
  AdamW opt(ps, t);

  std::vector<double> ref_w(ps.param(w).f32(), ps.param(w).f32() + 3), ref_g = {1, 1};
  std::vector<double> m(5, 0), v(5, 0);
  const double lr = 0.01, scale = 0.5;
  for (int step = 1; step <= 3; ++step) {
    ps.zero_grads();
    for (int i = 0; i < 3; ++i) ps.grad(w).f32()[i] = float(0.1 * (i + 1) * step - 0.2);
    for (int i = 0; i < 2; ++i) ps.grad(g).f32()[i] = float(-0.3 * (i + 1));
    ps.grad(b).f32()[0] = 5.f;  // must be ignored: buffers are not trained
    opt.step(ps, lr, float(scale));
    double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.95, step);
    auto update = [&](double& p, double grad, int slot, bool decay) {
      grad *= scale;
      if (decay) p -= lr * 0.1 * p;
      m[slot] = 0.9 * m[slot] + 0.1 * grad;
      v[slot] = 0.95 * v[slot] + 0.05 * grad * grad;
      p -= lr / bc1 * m[slot] / (std::sqrt(v[slot] / bc2) + 1e-8);
    };
    for (int i = 0; i < 3; ++i) update(ref_w[i], double(float(0.1 * (i + 1) * step - 0.2)), i, true);
    for (int i = 0; i < 2; ++i) update(ref_g[i], double(float(-0.3 * (i + 1))), 3 + i, false);
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(ps.param(w).f32()[i], ref_w[i], 1e-6) << i;
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(ps.param(g).f32()[i], ref_g[i], 1e-6) << i;
  EXPECT_EQ(ps.param(b).f32()[0], 0.f);
  EXPECT_EQ(opt.steps_taken(), 3);
}

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
