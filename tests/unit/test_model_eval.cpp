// The evaluation forward (DeepSeekV3::forward_ranked): each token's target rank against a naive
// reference, the full logits row of that position (last_logits of the prefix: the model is
// causal), sorted; the loss it returns is forward()'s bit for bit; and on the emulated device
// (tests/unit/emulated_device.h) it equals the CPU, so the ranks reach the host only through the
// explicit download.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "emulated_device.h"
#include "framework/rng.h"
#include "model/model.h"

using namespace moe;

namespace {

ModelConfig small_model() {
  ModelConfig c;
  c.vocab_size = 40; c.hidden = 32; c.layers = 2; c.dense_layers = 1; c.dense_inter = 48;
  c.heads = 2; c.q_lora_rank = 24; c.kv_lora_rank = 16; c.qk_nope_dim = 8; c.qk_rope_dim = 8; c.v_head_dim = 12;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 16;
  c.init_std = 0.3;  // large weights: peaked logits, so that top-1 hits happen
  return c;
}

struct Batch {
  int64_t B = 2, T = 12;
  std::vector<int32_t> ids, tgt;
};

Batch make_batch(const ModelConfig& c) {
  Batch b;
  for (int64_t i = 0; i < b.B * b.T; ++i) {
    b.ids.push_back(int32_t(rng_bits(7, 1, uint64_t(i)) % uint64_t(c.vocab_size)));
    b.tgt.push_back(int32_t(rng_bits(7, 2, uint64_t(i)) % uint64_t(c.vocab_size)));
  }
  return b;
}

}  // namespace

TEST(ModelEval, RanksMatchSortedLogitsOfEachPosition) {
  const ModelConfig c = small_model();
  DeepSeekV3 m(c);
  m.params().initialize(3);
  const Batch b = make_batch(c);
  const int64_t N = b.B * b.T;
  std::vector<int32_t> ranks(size_t(N), -1);
  const ForwardStats ranked = m.forward_ranked(b.ids.data(), b.tgt.data(), b.B, b.T, false, ranks.data());
  const ForwardStats plain = m.forward(b.ids.data(), b.tgt.data(), b.B, b.T, false);
  EXPECT_EQ(ranked.loss, plain.loss);
  for (int64_t s = 0; s < b.B; ++s)
    for (int64_t t = 0; t < b.T; ++t) {
      // Position t of sequence s sees tokens 0..t of it only.
      Tensor logits = m.last_logits(b.ids.data() + s * b.T, 1, t + 1);
      const float* row = logits.f32();
      std::vector<int32_t> order(size_t(c.vocab_size));
      for (int32_t i = 0; i < c.vocab_size; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return row[x] > row[y]; });
      const int32_t target = b.tgt[s * b.T + t];
      const int32_t expected = int32_t(std::find(order.begin(), order.end(), target) - order.begin());
      // The prefix's logits may differ from the batch's in the last bits (other GEMM shapes): a
      // near-tie may swap, nothing more.
      EXPECT_NEAR(ranks[s * b.T + t], expected, 1) << "sequence " << s << " position " << t;
    }
}

TEST(ModelEval, EmulatedDeviceEqualsCpu) {
  const ModelConfig c = small_model();
  const Batch b = make_batch(c);
  const int64_t N = b.B * b.T;
  auto run = [&](Backend& backend, std::vector<int32_t>& ranks, std::vector<float>& load) {
    ComputeScope scope(backend);
    DeepSeekV3 m(c);
    m.params().initialize(3);
    ranks.assign(size_t(N), -1);
    const ForwardStats s = m.forward_ranked(b.ids.data(), b.tgt.data(), b.B, b.T, true, ranks.data());
    load.assign(m.expert_load().f32(), m.expert_load().f32() + m.expert_load().numel());
    return s.loss;
  };
  std::vector<int32_t> cpu_ranks, dev_ranks;
  std::vector<float> cpu_load, dev_load;
  const double cpu_loss = run(cpu_backend(), cpu_ranks, cpu_load);
  test::EmulatedDevice device;
  const double dev_loss = run(device, dev_ranks, dev_load);
  EXPECT_EQ(cpu_loss, dev_loss);
  EXPECT_EQ(cpu_ranks, dev_ranks);
  EXPECT_EQ(cpu_load, dev_load);
  double routed = 0;
  for (float x : cpu_load) routed += x;
  EXPECT_EQ(routed, double(N * c.experts_per_token));  // every token's K experts counted once
}
