// DeepSeekV3::token_losses(): the per-position cross-entropy of the last forward, checked against
// the mean loss forward() returns and, position by position, against -log softmax of the logits
// that last_logits() computes for each prefix alone (a separate path through the head).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/rng.h"
#include "model/model.h"

using namespace moe;

namespace {

ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 32; c.hidden = 16; c.layers = 2; c.dense_layers = 1; c.dense_inter = 24;
  c.heads = 2; c.q_lora_rank = 12; c.kv_lora_rank = 8; c.qk_nope_dim = 4; c.qk_rope_dim = 4; c.v_head_dim = 6;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 8;
  c.init_std = 0.3;  // large weights: losses far from ln V, so a wrong position shows
  return c;
}

std::vector<int32_t> random_ids(int64_t n, uint64_t stream, int V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t(rng_bits(5, stream, uint64_t(i)) % uint64_t(V));
  return ids;
}

}  // namespace

TEST(TokenLosses, MeanIsTheForwardLoss) {
  DeepSeekV3 m(tiny_model());
  m.params().initialize(7);
  const int64_t B = 3, T = 10;
  std::vector<int32_t> ids = random_ids(B * T, 1, 32), tgt = random_ids(B * T, 2, 32);
  ForwardStats s = m.forward(ids.data(), tgt.data(), B, T, /*count_load=*/false);
  std::vector<float> losses = m.token_losses();
  ASSERT_EQ(losses.size(), size_t(B * T));
  double sum = 0;
  for (float l : losses) {
    EXPECT_GT(l, 0.f);
    sum += l;
  }
  EXPECT_NEAR(sum / double(B * T), s.loss, 1e-6 * s.loss);
}

TEST(TokenLosses, EachPositionIsMinusLogSoftmaxOfItsPrefix) {
  DeepSeekV3 m(tiny_model());
  m.params().initialize(11);
  const int64_t B = 2, T = 9, V = 32;
  std::vector<int32_t> ids = random_ids(B * T, 3, V), tgt = random_ids(B * T, 4, V);
  m.forward(ids.data(), tgt.data(), B, T, /*count_load=*/false);
  std::vector<float> losses = m.token_losses();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      Tensor logits = m.last_logits(ids.data() + b * T, 1, t + 1);
      const float* z = logits.f32();
      double mx = z[0], sum = 0;
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
      const double expected = mx + std::log(sum) - z[tgt[b * T + t]];
      EXPECT_NEAR(losses[b * T + t], expected, 1e-4) << "sequence " << b << " position " << t;
    }
}

TEST(TokenLosses, NeedAForwardNotLastLogits) {
  DeepSeekV3 m(tiny_model());
  m.params().initialize(1);
  std::vector<int32_t> ids = random_ids(8, 5, 32);
  m.forward(ids.data(), ids.data(), 1, 8, /*count_load=*/false);
  m.last_logits(ids.data(), 1, 4);
  EXPECT_THROW(m.token_losses(), InternalError);
}
