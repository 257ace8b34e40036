// Self-speculative decoding (launch/speculative.h): MTP module 1 in decode form with its own
// latent cache rows (DeepSeekV3::mtp_draft, after prefill or decode) gives the training forward's
// MTP predictions, and speculative greedy decoding returns exactly the plain greedy tokens: on a
// random model (drafts mostly rejected) and on one trained on a periodic sequence (mostly accepted).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/error.h"
#include "framework/optimizer.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "launch/speculative.h"
#include "model/kv_cache.h"

using namespace moe;

namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 24; c.hidden = 32; c.layers = 2; c.dense_layers = 1; c.dense_inter = 48;
  c.heads = 2; c.q_lora_rank = 16; c.kv_lora_rank = 16; c.qk_nope_dim = 8; c.qk_rope_dim = 4;
  c.v_head_dim = 8; c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 12;
  c.init_std = 0.2;
  c.mtp_depth = 1;
  return c;
}

// -log softmax(z)[t]
double nll(const float* z, int64_t V, int32_t t) {
  double m = z[0], s = 0;
  for (int64_t v = 1; v < V; ++v) m = std::max(m, double(z[v]));
  for (int64_t v = 0; v < V; ++v) s += std::exp(double(z[v]) - m);
  return m + std::log(s) - double(z[t]);
}

}  // namespace

TEST(Speculative, DraftsAreTheTrainingForwardsMtpPredictions) {
  set_num_threads(2);
  const ModelConfig c = tiny();
  DeepSeekV3 m(c);
  m.params().initialize(5);
  const int64_t T = 10, V = c.vocab_size;
  std::vector<int32_t> t(T + 1);
  for (int64_t i = 0; i <= T; ++i) t[size_t(i)] = int32_t(rng_bits(4, 1, uint64_t(i)) % uint64_t(V));
  std::vector<int32_t> ids(t.begin(), t.end() - 1), targets(t.begin() + 1, t.end());
  m.forward(ids.data(), targets.data(), 1, T);
  const float* ref = m.mtp_modules()[0].acts.losses_N.f32();  // position i: -log p(t_{i+2}), i < T-1

  // Decode form from a one-token prefill: position i drafted after decoding t_i.
  KVCache cache(m, 1, T);
  m.prefill(cache, 0, t.data(), 1);
  const int64_t slot = 0;
  for (int64_t i = 0; i + 1 < T; ++i) {
    if (i > 0) m.decode(cache, &slot, &t[size_t(i)], 1);
    Tensor z = m.mtp_draft(cache, 0, 0, &t[size_t(i + 1)], 1);
    EXPECT_NEAR(nll(z.f32(), V, t[size_t(i + 2)]), ref[i], 2e-5 * std::fabs(ref[i]) + 1e-6) << "position " << i;
  }
  // After a prefill of 6 tokens (MTP rows 0..4 written by the prefill): position 5.
  KVCache cache2(m, 1, T);
  m.prefill(cache2, 0, t.data(), 6);
  EXPECT_EQ(cache2.mtp_length[0], 5);
  Tensor z = m.mtp_draft(cache2, 0, 0, &t[6], 1);
  EXPECT_NEAR(nll(z.f32(), V, t[7]), ref[5], 2e-5 * std::fabs(ref[5]) + 1e-6);
}

TEST(Speculative, RandomModelGivesThePlainGreedyTokens) {
  set_num_threads(2);
  DeepSeekV3 m(tiny());
  m.params().initialize(9);
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  SpeculativeStats st;
  const std::vector<int32_t> plain = greedy_decode(m, prompt, 24);
  EXPECT_EQ(speculative_greedy_decode(m, prompt, 24, &st), plain);
  EXPECT_GT(st.drafted, 0);
  EXPECT_EQ(speculative_greedy_decode(m, prompt, 1), greedy_decode(m, prompt, 1));
  ModelConfig no_mtp = tiny();
  no_mtp.mtp_depth = 0;
  DeepSeekV3 plain_model(no_mtp);
  plain_model.params().initialize(9);
  EXPECT_THROW(speculative_greedy_decode(plain_model, prompt, 4), Error);
}

TEST(Speculative, TrainedModelAcceptsMostDraftsAndStillMatches) {
  set_num_threads(2);
  DeepSeekV3 m(tiny());
  m.params().initialize(2);
  m.set_mtp_loss_weight(1.0);
  TrainConfig tc;
  AdamW opt(m.params().numel(), trainable_segments(m.params()), tc);
  const int64_t B = 4, T = 16, period = 7;
  std::vector<int32_t> ids(B * T), targets(B * T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) {
      ids[size_t(b * T + i)] = int32_t((b + i) % period);
      targets[size_t(b * T + i)] = int32_t((b + i + 1) % period);
    }
  for (int s = 0; s < 60; ++s) {
    m.params().zero_grads();
    m.forward(ids.data(), targets.data(), B, T);
    m.backward(1.f);
    opt.step(m.params().params(), m.params().grads(), 1e-2, 1.f);
  }
  const std::vector<int32_t> prompt = {2, 3, 4};
  SpeculativeStats st;
  const std::vector<int32_t> spec = speculative_greedy_decode(m, prompt, 20, &st);
  EXPECT_EQ(spec, greedy_decode(m, prompt, 20));
  EXPECT_EQ(spec[0], 5);
  EXPECT_GT(st.acceptance(), 0.8) << st.accepted << " of " << st.drafted;
  EXPECT_LT(st.main_passes, 15);
}
