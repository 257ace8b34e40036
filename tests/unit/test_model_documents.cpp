// Document-aware attention (data.document_mask): a packed window of several documents must give,
// at every position, what each document gives as a sequence of its own (attention stays inside
// the document, RoPE positions restart at its start); its gradients must match finite
// differences; and the emulated device must compute it bit for bit like the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "emulated_device.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "model/model.h"

using namespace moe;

namespace {

ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 32; c.hidden = 16; c.layers = 2; c.dense_layers = 1; c.dense_inter = 24;
  c.heads = 2; c.q_lora_rank = 12; c.kv_lora_rank = 8; c.qk_nope_dim = 4; c.qk_rope_dim = 4; c.v_head_dim = 6;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 8;
  c.router.aux_loss_coef = 0.01; c.router.z_loss_coef = 0.01;
  c.init_std = 0.3;
  return c;
}

// B sequences of T tokens cut into documents of the given lengths (each row sums to T).
struct Packed {
  int64_t B = 0, T = 0;
  std::vector<std::vector<int64_t>> lengths;
  std::vector<int32_t> ids, targets, doc_start;

  Packed(std::vector<std::vector<int64_t>> lens, int64_t T_, int vocab) : B(int64_t(lens.size())), T(T_), lengths(std::move(lens)) {
    ids.resize(size_t(B * T));
    targets.resize(ids.size());
    doc_start.resize(ids.size());
    for (int64_t i = 0; i < B * T; ++i) {
      ids[size_t(i)] = int32_t(rng_bits(4, 1, uint64_t(i)) % uint64_t(vocab));
      targets[size_t(i)] = int32_t(rng_bits(4, 2, uint64_t(i)) % uint64_t(vocab));
    }
    for (int64_t b = 0; b < B; ++b) {
      int64_t at = 0;
      for (int64_t len : lengths[size_t(b)]) {
        for (int64_t t = at; t < at + len; ++t) doc_start[size_t(b * T + t)] = int32_t(at);
        at += len;
      }
      EXPECT_EQ(at, T);
    }
  }
};

// The largest |a - b| / max(|b|, 1e-3) over the two vectors.
double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]) / std::max(std::fabs(double(b[i])), 1e-3));
  return worst;
}

// Per-token losses of every document run alone (a sequence of its own), in packed order.
std::vector<float> losses_alone(DeepSeekV3& m, const Packed& p) {
  std::vector<float> out;
  for (int64_t b = 0; b < p.B; ++b) {
    int64_t at = 0;
    for (int64_t len : p.lengths[size_t(b)]) {
      const size_t first = size_t(b * p.T + at);
      m.forward(p.ids.data() + first, p.targets.data() + first, 1, len, /*count_load=*/false);
      std::vector<float> l = m.token_losses();
      out.insert(out.end(), l.begin(), l.end());
      at += len;
    }
  }
  return out;
}

class Documents : public ::testing::Test {
 protected:
  void SetUp() override { set_num_threads(2); }
  ModelConfig c = tiny_model();
};

}  // namespace

// Sequences longer than the attention's query block (64) with documents starting inside blocks
// and at block boundaries; the equality figure goes to the log.
TEST_F(Documents, PackedWindowEqualsEachDocumentAlone) {
  for (bool recompute : {false, true}) {
    DeepSeekV3 m(c);
    m.set_recompute(recompute);
    m.params().initialize(21);
    const Packed p({{40, 24, 86}, {150}, {1, 63, 64, 22}}, 150, c.vocab_size);
    m.forward(p.ids.data(), p.targets.data(), p.B, p.T, /*count_load=*/false, p.doc_start.data());
    const std::vector<float> packed = m.token_losses();
    const std::vector<float> alone = losses_alone(m, p);
    ASSERT_EQ(packed.size(), alone.size());
    const double diff = max_relative_difference(packed, alone);
    printf("document mask%s: max relative difference of per-token losses, packed vs alone: %.3g\n",
           recompute ? " (recompute)" : "", diff);
    EXPECT_LT(diff, 1e-5);
    // Without the mask the later documents see their predecessors: the check can fail.
    m.forward(p.ids.data(), p.targets.data(), p.B, p.T, /*count_load=*/false);
    EXPECT_GT(max_relative_difference(m.token_losses(), alone), 1e-3);
  }
}

// One document per window is the plain causal model, bit for bit.
TEST_F(Documents, OneDocumentPerWindowIsThePlainModel) {
  DeepSeekV3 m(c);
  m.params().initialize(5);
  const Packed p({{70}, {70}}, 70, c.vocab_size);
  ForwardStats masked = m.forward(p.ids.data(), p.targets.data(), p.B, p.T, false, p.doc_start.data());
  const std::vector<float> a = m.token_losses();
  ForwardStats plain = m.forward(p.ids.data(), p.targets.data(), p.B, p.T, false);
  EXPECT_EQ(masked.loss, plain.loss);
  EXPECT_EQ(a, m.token_losses());
}

// Finite differences of the whole model's loss under a mask, every parameter tensor.
TEST_F(Documents, GradientsMatchFiniteDifferences) {
  DeepSeekV3 m(c);
  m.params().initialize(21);
  const Packed p({{2, 3}, {1, 1, 3}}, 5, c.vocab_size);
  auto loss = [&] {
    ForwardStats s = m.forward(p.ids.data(), p.targets.data(), p.B, p.T, true, p.doc_start.data());
    return s.loss + s.aux_loss + s.z_loss;
  };
  m.params().zero_grads();
  loss();
  m.backward(1.f);
  ParamStore& ps = m.params();
  const float h = 2e-3f;
  for (const ParamInfo& info : ps.infos()) {
    if (!info.trainable) continue;
    const int id = ps.find(info.name);
    const int64_t n = shape_numel(info.shape);
    float* x = ps.param(id).f32();
    std::vector<float> g(ps.grad(id).f32(), ps.grad(id).f32() + n);
    double gmax = 0;
    int64_t imax = 0;
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(g[size_t(i)]) > gmax) gmax = std::fabs(g[size_t(i)]), imax = i;
    for (int64_t i : {imax, int64_t(rng_bits(3, hash_name(info.name), 1) % uint64_t(n))}) {
      const float keep = x[i];
      x[i] = keep + h;
      const double lp = loss();
      x[i] = keep - h;
      const double lm = loss();
      x[i] = keep;
      EXPECT_NEAR((lp - lm) / (2.0 * h), g[size_t(i)], 3e-2 * std::max(gmax, 1e-3) + 1e-4)
          << info.name << " element " << i;
    }
  }
}

// A long masked sequence through MLA alone: the blocked attention's key offsets (documents that
// start inside a query block) in backward against finite differences, and no leak across documents.
TEST_F(Documents, AttentionGradientsAcrossQueryBlocks) {
  const int64_t B = 1, T = 150, N = B * T, D = c.hidden;
  ParamStore ps;
  MLA attn;
  attn.init(ps, "attn", c);
  ps.allocate();
  ps.initialize(17);
  const Packed p({{30, 50, 70}}, T, c.vocab_size);
  RopeTables rt;
  rt.build(T, c.qk_rope_dim, 10000.0);
  rt.set_documents(p.doc_start.data(), B);
  std::vector<float> x(size_t(N * D)), r(x.size()), y(x.size()), dx(x.size(), 0.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = rng_normal(7, 5, i), r[i] = rng_normal(7, 6, i);
  MLAActs a;
  attn.forward(ps, y.data(), x.data(), B, T, rt, a);
  attn.backward(ps, dx.data(), r.data(), x.data(), B, T, rt, a);
  auto loss = [&] {
    attn.forward(ps, y.data(), x.data(), B, T, rt, a);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * r[i];
    return s;
  };
  double gmax = 0;
  for (float g : dx) gmax = std::max(gmax, double(std::fabs(g)));
  for (int64_t t : {5, 29, 30, 64, 79, 80, 130, 149}) {  // around document and block boundaries
    const size_t i = size_t(t * D + t % D);
    const float keep = x[i], h = 1e-2f;
    x[i] = keep + h;
    const double lp = loss();
    x[i] = keep - h;
    const double lm = loss();
    x[i] = keep;
    EXPECT_NEAR((lp - lm) / (2.0 * h), dx[i], 3e-2 * gmax + 1e-4) << "position " << t;
  }
  // The last document (from 80) does not depend on the earlier ones.
  loss();
  const std::vector<float> y0 = y;
  for (size_t i = 0; i < size_t(80 * D); ++i) x[i] += 1.f;
  attn.forward(ps, y.data(), x.data(), B, T, rt, a);
  for (size_t i = size_t(80 * D); i < y.size(); ++i) ASSERT_EQ(y[i], y0[i]) << "position " << i / size_t(D);
}

// The masked forward and backward on the emulated device: losses and gradients bit for bit the CPU's.
TEST_F(Documents, EmulatedDeviceIsBitwiseTheCpu) {
  auto run = [&](Backend& b, std::vector<float>& losses, std::vector<float>& grads) {
    ComputeScope scope(b);
    DeepSeekV3 m(c);
    m.params().initialize(9);
    const Packed p({{10, 60, 30}, {100}}, 100, c.vocab_size);
    m.params().zero_grads();
    m.forward(p.ids.data(), p.targets.data(), p.B, p.T, true, p.doc_start.data());
    m.backward(1.f);
    losses = m.token_losses();
    grads.resize(size_t(m.params().numel()));
    b.download(grads.data(), m.params().grads(), grads.size() * sizeof(float));
  };
  std::vector<float> cpu_losses, cpu_grads, dev_losses, dev_grads;
  run(cpu_backend(), cpu_losses, cpu_grads);
  test::EmulatedDevice device;
  run(device, dev_losses, dev_grads);
  EXPECT_GT(device.ops(), 100);
  EXPECT_EQ(cpu_losses, dev_losses);
  ASSERT_EQ(cpu_grads.size(), dev_grads.size());
  EXPECT_EQ(0, std::memcmp(cpu_grads.data(), dev_grads.data(), cpu_grads.size() * sizeof(float)));
}
