// Finite-difference gradient checks: every module's backward against central differences of its
// forward, and the whole model with every parameter tensor checked. Loss for a module is a fixed
// random projection sum_i r_i * y_i, so every output element carries gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "framework/error.h"
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
  c.router.aux_loss_coef = 0.01; c.router.z_loss_coef = 0.01; c.router.routed_scaling = 1.5;
  c.init_std = 0.3;  // large weights: gradients well above f32 round-off of the loss
  return c;
}

void fill_random(float* x, int64_t n, uint64_t stream, float scale = 1.f) {
  for (int64_t i = 0; i < n; ++i) x[i] = scale * rng_normal(7, stream, uint64_t(i));
}

// Checks analytic gradient `ana[n]` of `loss()` w.r.t. `x[n]` at up to `samples` elements (always
// including the largest gradient). Tolerance is relative to the tensor's largest gradient.
void check_grad(const std::string& what, float* x, const float* ana, int64_t n, const std::function<double()>& loss,
                int samples = 6, float h = 1e-2f, double rtol = 3e-2) {
  double gmax = 0;
  int64_t imax = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(ana[i]) > gmax) gmax = std::fabs(ana[i]), imax = i;
  std::vector<int64_t> idx{imax};
  for (int s = 1; s < samples && s < n; ++s) idx.push_back(int64_t(rng_bits(3, hash_name(what), s) % uint64_t(n)));
  for (int64_t i : idx) {
    float keep = x[i];
    x[i] = keep + h;
    double lp = loss();
    x[i] = keep - h;
    double lm = loss();
    x[i] = keep;
    double num = (lp - lm) / (2.0 * h);
    EXPECT_NEAR(num, ana[i], rtol * std::max(gmax, 1e-3) + 1e-4) << what << " element " << i << " (max |grad| " << gmax << ")";
  }
}

double project(const float* y, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < r.size(); ++i) s += double(y[i]) * r[i];
  return s;
}

class ModuleGrad : public ::testing::Test {
 protected:
  void SetUp() override { set_num_threads(2); }
  ModelConfig c = tiny_model();
  const int64_t B = 2, T = 5, N = B * T;
};

}  // namespace

TEST_F(ModuleGrad, RMSNormSwiGLUAndMLA) {
  ParamStore ps;
  RMSNorm norm;
  norm.init(ps, "norm.weight", c.hidden, 1e-6f);
  SwiGLUMLP mlp;
  mlp.init(ps, "mlp", c.hidden, c.dense_inter, 0.3f);
  MLA attn;
  attn.init(ps, "attn", c);
  ps.allocate();
  ps.initialize(11);
  fill_random(ps.param(norm.w).f32(), c.hidden, 99, 0.5f);  // non-trivial norm weights
  RopeTables rt;
  rt.build(T, c.qk_rope_dim, 10000.0);
  const int64_t D = c.hidden;
  std::vector<float> x(N * D), r(N * D), y(N * D), dx(N * D);
  fill_random(x.data(), N * D, 1);
  fill_random(r.data(), N * D, 2);

  // Each module: loss = r . f(x).
  struct Case {
    std::string name;
    std::function<void()> fwd, bwd;
  };
  Tensor rstd = Tensor::empty({N});
  MLPActs ma;
  MLAActs aa;
  std::vector<Case> cases = {
      {"rmsnorm", [&] { norm.forward(ps, y.data(), rstd.f32(), x.data(), N); },
       [&] { norm.backward(ps, dx.data(), r.data(), x.data(), rstd.f32(), N); }},
      {"swiglu_mlp", [&] { mlp.forward(ps, y.data(), x.data(), N, ma); },
       [&] { mlp.backward(ps, dx.data(), r.data(), x.data(), N, ma); }},
      {"mla", [&] { attn.forward(ps, y.data(), x.data(), B, T, rt, aa); },
       [&] { std::fill(dx.begin(), dx.end(), 0.f); attn.backward(ps, dx.data(), r.data(), x.data(), B, T, rt, aa); }},
  };
  for (auto& cs : cases) {
    ps.zero_grads();
    cs.fwd();
    cs.bwd();
    auto loss = [&] { cs.fwd(); return project(y.data(), r); };
    std::vector<float> dx_copy = dx;
    check_grad(cs.name + " input", x.data(), dx_copy.data(), N * D, loss);
    for (const ParamInfo& p : ps.infos()) {
      if (p.name.rfind(cs.name == "rmsnorm" ? "norm" : cs.name == "swiglu_mlp" ? "mlp" : "attn", 0) != 0) continue;
      std::vector<float> g(ps.grad(ps.find(p.name)).f32(), ps.grad(ps.find(p.name)).f32() + shape_numel(p.shape));
      check_grad(p.name, ps.param(ps.find(p.name)).f32(), g.data(), shape_numel(p.shape), loss);
    }
  }
}

TEST_F(ModuleGrad, MoELayerWithAuxAndZLoss) {
  for (const char* score : {"sigmoid", "softmax"}) {
    c.router.score = score;
    ParamStore ps;
    MoELayer moe;
    moe.init(ps, "mlp", c, ModelPlacement{});
    ps.allocate();
    ps.initialize(5);
    const int64_t D = c.hidden;
    std::vector<float> x(N * D), r(N * D), y(N * D), dx(N * D);
    fill_random(x.data(), N * D, 3);
    fill_random(r.data(), N * D, 4);
    MoEActs a;
    const float scale = 1.f;
    auto total = [&] {
      moe.forward(ps, y.data(), x.data(), B, T, a, nullptr);
      return project(y.data(), r) + double(a.router.losses_2.f32()[0]) + double(a.router.losses_2.f32()[1]);
    };
    ps.zero_grads();
    total();
    moe.backward(ps, dx.data(), r.data(), x.data(), B, T, a, scale);
    std::vector<float> dx_copy = dx;
    check_grad(std::string(score) + " moe input", x.data(), dx_copy.data(), N * D, total);
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      int id = ps.find(p.name);
      std::vector<float> g(ps.grad(id).f32(), ps.grad(id).f32() + shape_numel(p.shape));
      check_grad(std::string(score) + " " + p.name, ps.param(id).f32(), g.data(), shape_numel(p.shape), total);
    }
  }
}

// The whole model, every parameter tensor, for both the stored-activation and recompute paths.
TEST_F(ModuleGrad, WholeModelEveryParameter) {
  for (bool recompute : {false, true}) {
    DeepSeekV3 m(c);
    m.set_recompute(recompute);
    m.params().initialize(21);
    std::vector<int32_t> ids(N), tgt(N);
    for (int64_t i = 0; i < N; ++i) {
      ids[i] = int32_t(rng_bits(1, 1, i) % c.vocab_size);
      tgt[i] = int32_t(rng_bits(1, 2, i) % c.vocab_size);
    }
    auto loss = [&] {
      ForwardStats s = m.forward(ids.data(), tgt.data(), B, T);
      return s.loss + s.aux_loss + s.z_loss;
    };
    m.params().zero_grads();
    loss();
    m.backward(1.f);
    ParamStore& ps = m.params();
    int checked = 0;
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      int id = ps.find(p.name);
      std::vector<float> g(ps.grad(id).f32(), ps.grad(id).f32() + shape_numel(p.shape));
      check_grad((recompute ? "recompute " : "") + p.name, ps.param(id).f32(), g.data(), shape_numel(p.shape), loss, 3, 2e-3f);
      ++checked;
    }
    EXPECT_EQ(checked, int(ps.infos().size()) - m.moe_layers());  // all but the router biases
  }
}

// Multi-token prediction: loss + λ·mtp_loss, every parameter (the MTP modules', and the shared
// embedding and head with gradients from both). Depth 2 with dense_layers 3: module 1's block is
// dense (layer 2), module 2's MoE (layer 3); tied embeddings and recompute once each.
TEST_F(ModuleGrad, WholeModelWithMTP) {
  struct Case {
    int depth, dense_layers;
    bool tie, recompute;
  };
  for (Case cs : {Case{1, 1, false, false}, Case{2, 3, false, true}, Case{2, 1, true, false}}) {
    c.mtp_depth = cs.depth;
    c.dense_layers = cs.dense_layers;
    c.tie_embeddings = cs.tie;
    DeepSeekV3 m(c);
    m.set_recompute(cs.recompute);
    m.set_mtp_loss_weight(0.7);
    m.params().initialize(23);
    std::vector<int32_t> ids(N), tgt(N);
    for (int64_t i = 0; i < N; ++i) {
      ids[i] = int32_t(rng_bits(1, 3, i) % c.vocab_size);
      tgt[i] = int32_t(rng_bits(1, 4, i) % c.vocab_size);
    }
    auto loss = [&] {
      ForwardStats s = m.forward(ids.data(), tgt.data(), B, T);
      return s.loss + 0.7 * s.mtp_loss + s.aux_loss + s.z_loss;
    };
    m.params().zero_grads();
    EXPECT_GT(loss(), 0.0);
    m.backward(1.f);
    ParamStore& ps = m.params();
    int checked = 0;
    const std::string what = "mtp " + std::to_string(cs.depth) + (cs.tie ? " tied " : " ");
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      int id = ps.find(p.name);
      std::vector<float> g(ps.grad(id).f32(), ps.grad(id).f32() + shape_numel(p.shape));
      check_grad(what + p.name, ps.param(id).f32(), g.data(), shape_numel(p.shape), loss, 3, 2e-3f);
      ++checked;
    }
    EXPECT_EQ(checked, int(ps.infos().size()) - m.moe_layers());
    EXPECT_GE(ps.find("model.layers." + std::to_string(c.layers + cs.depth - 1) + ".eh_proj.weight"), 0);
  }
}

TEST(ModelMTP, SequenceNoLongerThanDepthIsAClearError) {
  ModelConfig c = tiny_model();
  c.mtp_depth = 2;
  DeepSeekV3 m(c);
  m.params().initialize(1);
  std::vector<int32_t> ids(4, 1), tgt(4, 2);
  try {
    m.forward(ids.data(), tgt.data(), 2, 2);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mtp_depth"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(m.forward_ranked(ids.data(), tgt.data(), 2, 2, false, nullptr));  // evaluation: main model only
}

TEST(ModelLoss, FreshModelLossIsLnVocab) {
  ModelConfig c = tiny_model();
  c.vocab_size = 256;
  c.init_std = 0.02;
  DeepSeekV3 m(c);
  m.params().initialize(1337);
  const int64_t B = 4, T = 16;
  std::vector<int32_t> ids(B * T), tgt(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    ids[i] = int32_t(rng_bits(2, 1, i) % 256);
    tgt[i] = int32_t(rng_bits(2, 2, i) % 256);
  }
  ForwardStats s = m.forward(ids.data(), tgt.data(), B, T);
  EXPECT_NEAR(s.loss, std::log(256.0), 0.05);
}

TEST(ModelInit, ValuesDependOnlyOnSeedNameAndIndex) {
  ModelConfig c = tiny_model();
  DeepSeekV3 a(c), b(c);
  a.params().initialize(5);
  b.params().initialize(5);
  const ParamStore &pa = a.params(), &pb = b.params();
  int id = pa.find("model.layers.1.mlp.experts.3.up_proj.weight");
  ASSERT_GE(id, 0);
  EXPECT_EQ(0, memcmp(pa.param(id).raw(), pb.param(id).raw(), pa.param(id).nbytes()));
  // A differently shaped model gives the same values to a same-named, same-shaped parameter.
  ModelConfig c2 = c;
  c2.layers = 3;
  DeepSeekV3 d(c2);
  d.params().initialize(5);
  int id2 = d.params().find("model.layers.1.mlp.experts.3.up_proj.weight");
  EXPECT_EQ(0, memcmp(pa.param(id).raw(), d.params().param(id2).raw(), pa.param(id).nbytes()));
  a.params().initialize(6);
  EXPECT_NE(0, memcmp(pa.param(id).raw(), pb.param(id).raw(), pa.param(id).nbytes()));
}

// Sequences longer than the attention query block (64), with a partial last block: the blocked
// causal attention must give the same gradients as its own forward implies.
TEST(AttentionGrad, LongSequenceCrossesQueryBlocks) {
  set_num_threads(2);
  ModelConfig c = tiny_model();
  const int64_t B = 1, T = 150, N = B * T, D = c.hidden;
  ParamStore ps;
  MLA attn;
  attn.init(ps, "attn", c);
  ps.allocate();
  ps.initialize(17);
  RopeTables rt;
  rt.build(T, c.qk_rope_dim, 10000.0);
  std::vector<float> x(N * D), r(N * D), y(N * D), dx(N * D, 0.f);
  fill_random(x.data(), N * D, 5);
  fill_random(r.data(), N * D, 6);
  MLAActs a;
  attn.forward(ps, y.data(), x.data(), B, T, rt, a);
  attn.backward(ps, dx.data(), r.data(), x.data(), B, T, rt, a);
  auto loss = [&] { attn.forward(ps, y.data(), x.data(), B, T, rt, a); return project(y.data(), r); };
  // Inputs late in the sequence (last block) and early (first block) both carry gradient.
  std::vector<float> dx_copy = dx;
  check_grad("long mla input", x.data(), dx_copy.data(), N * D, loss, 12);
  for (const ParamInfo& p : ps.infos()) {
    int id = ps.find(p.name);
    std::vector<float> g(ps.grad(id).f32(), ps.grad(id).f32() + shape_numel(p.shape));
    check_grad("long " + p.name, ps.param(id).f32(), g.data(), shape_numel(p.shape), loss);
  }
  // Causality: the output at position t does not depend on inputs after t.
  loss();
  std::vector<float> y0 = y;
  for (int64_t i = 100 * D; i < N * D; ++i) x[i] += 1.f;
  attn.forward(ps, y.data(), x.data(), B, T, rt, a);
  for (int64_t i = 0; i < 100 * D; ++i) ASSERT_EQ(y[i], y0[i]) << "position " << i / D;
}
