// The whole model against a float64 PyTorch reference of Hugging Face's DeepseekV3ForCausalLM
// (tests/golden/make_golden.py writes the golden files; see its header for the format). Checks:
// the parameter names and shapes are exactly HF's (every tensor in the file is in the ParamStore
// and vice versa), the loss, the last-position logits, every parameter's gradient, and the
// router's choices (standalone on the reference's router inputs, and as the model's expert loads).
// Errors are normalised per tensor, max|ours - ref| / max|ref| (ggml's style), since the model runs
// in float32 and the reference in float64.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "framework/threads.h"
#include "model/model.h"

using namespace moe;
using nlohmann::json;

namespace {

const char* kGolden = "tests/golden/deepseek_v3_tiny";
const char* kGoldenMTP = "tests/golden/deepseek_v3_tiny_mtp";  // with 2 MTP modules

// The header plus the float32 blob it indexes.
struct Golden {
  json h;
  std::vector<float> blob;

  static Golden load(const char* name = kGolden) {
    const char* src = std::getenv("MOE_SOURCE_DIR");
    std::string base = std::string(src ? src : ".") + "/" + name;
    Golden g;
    std::ifstream jf(base + ".json");
    if (!jf) throw std::runtime_error("cannot open " + base + ".json (is MOE_SOURCE_DIR set?)");
    g.h = json::parse(jf);
    std::ifstream bf(base + ".bin", std::ios::binary);
    if (!bf) throw std::runtime_error("cannot open " + base + ".bin");
    std::vector<char> bytes((std::istreambuf_iterator<char>(bf)), std::istreambuf_iterator<char>());
    g.blob.resize(bytes.size() / sizeof(float));
    std::copy_n(bytes.data(), g.blob.size() * sizeof(float), reinterpret_cast<char*>(g.blob.data()));
    return g;
  }
  // Entry {"shape": [...], "offset": n} -> its values (bounds-checked).
  std::vector<float> get(const json& e) const {
    int64_t n = 1;
    for (int64_t d : e.at("shape")) n *= d;
    int64_t off = e.at("offset");
    if (off < 0 || off + n > int64_t(blob.size())) throw std::runtime_error("golden entry out of the blob: " + e.dump());
    return {blob.begin() + off, blob.begin() + off + n};
  }
  static Shape shape(const json& e) { return e.at("shape").get<Shape>(); }
};

// Hugging Face config.json fields -> our ModelConfig (aux losses off: the reference has none).
ModelConfig config_from_hf(const json& c) {
  EXPECT_EQ(c.at("scoring_func"), "sigmoid");
  EXPECT_EQ(c.at("hidden_act"), "silu");
  EXPECT_TRUE(c.at("rope_interleave").get<bool>());
  EXPECT_TRUE(c.at("norm_topk_prob").get<bool>());
  ModelConfig m;
  m.vocab_size = c.at("vocab_size");
  m.hidden = c.at("hidden_size");
  m.layers = c.at("num_hidden_layers");
  m.dense_layers = c.at("first_k_dense_replace");
  m.dense_inter = c.at("intermediate_size");
  m.heads = c.at("num_attention_heads");
  m.q_lora_rank = c.at("q_lora_rank");
  m.kv_lora_rank = c.at("kv_lora_rank");
  m.qk_nope_dim = c.at("qk_nope_head_dim");
  m.qk_rope_dim = c.at("qk_rope_head_dim");
  m.v_head_dim = c.at("v_head_dim");
  m.shared_experts = c.at("n_shared_experts");
  m.routed_experts = c.at("n_routed_experts");
  m.experts_per_token = c.at("num_experts_per_tok");
  m.expert_inter = c.at("moe_intermediate_size");
  m.router.score = "sigmoid";
  m.router.routed_scaling = c.at("routed_scaling_factor");
  m.router.groups = c.at("n_group");
  m.router.groups_per_token = c.at("topk_group");
  m.router.aux_loss_coef = 0;
  m.router.z_loss_coef = 0;
  m.rope_theta = c.at("rope_theta");
  m.rms_norm_eps = c.at("rms_norm_eps");
  m.tie_embeddings = c.at("tie_word_embeddings");
  m.mtp_depth = c.value("num_nextn_predict_layers", 0);
  return m;
}

// max|a - b| / max|b|; when b is all zero, max|a| (so "both zero" passes and "a not zero" fails).
double norm_err(const float* a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(double(b[i])));
  }
  return m > 0 ? d / m : d;
}

// Loads the golden, builds the model from its config and weights, runs forward + backward(1) and
// the last-position logits once for all tests.
class ModelGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    set_num_threads(2);
    g = new Golden(Golden::load());
    cfg = config_from_hf(g->h.at("config"));
    model = new DeepSeekV3(cfg);
    B = g->h.at("batch");
    T = g->h.at("seq");
    ids = g->h.at("ids").get<std::vector<int32_t>>();
    targets = g->h.at("targets").get<std::vector<int32_t>>();
    load_weights(*model);
    stats = model->forward(ids.data(), targets.data(), B, T);
    model->backward(1.f);
    last = model->last_logits(ids.data(), B, T);
  }
  // Copies every golden parameter into the model (names or shapes that do not match are left for
  // ParamNamesAreHuggingFaces to report) and zeroes the gradients.
  static void load_weights(DeepSeekV3& m) {
    ParamStore& ps = m.params();
    for (auto& [name, e] : g->h.at("params").items()) {
      int id = ps.find(name);
      if (id < 0 || ps.param(id).shape() != Golden::shape(e)) continue;
      std::vector<float> v = g->get(e);
      std::copy(v.begin(), v.end(), ps.param(id).f32());
    }
    ps.zero_grads();
  }
  // Worst normalised error over all parameter gradients of m; every one must be below tol.
  static void expect_gradients(const DeepSeekV3& m, double tol) {
    const ParamStore& ps = m.params();
    double worst = 0;
    std::string worst_name;
    for (auto& [name, e] : g->h.at("grads").items()) {
      int id = ps.find(name);
      ASSERT_GE(id, 0) << name;
      std::vector<float> ref = g->get(e);
      ASSERT_EQ(ps.grad(id).numel(), int64_t(ref.size())) << name;
      double err = norm_err(ps.grad(id).f32(), ref);
      EXPECT_LT(err, tol) << name;
      if (err > worst) worst = err, worst_name = name;
    }
    std::printf("worst normalised gradient error %.2e (%s)\n", worst, worst_name.c_str());
  }
  static void TearDownTestSuite() {
    delete model;
    delete g;
  }

  static inline Golden* g = nullptr;
  static inline ModelConfig cfg;
  static inline DeepSeekV3* model = nullptr;
  static inline int64_t B = 0, T = 0;
  static inline std::vector<int32_t> ids, targets;
  static inline ForwardStats stats;
  static inline Tensor last;
};

}  // namespace

TEST_F(ModelGolden, ParamNamesAreHuggingFaces) {
  const ParamStore& ps = model->params();
  const json& params = g->h.at("params");
  std::set<std::string> ours;
  for (const ParamInfo& p : ps.infos()) {
    ours.insert(p.name);
    ASSERT_TRUE(params.contains(p.name)) << p.name << " is not a Hugging Face DeepseekV3 parameter";
    EXPECT_EQ(shape_str(p.shape), shape_str(Golden::shape(params.at(p.name)))) << p.name;
  }
  for (auto& [name, e] : params.items()) EXPECT_TRUE(ours.count(name)) << name << " is missing from the model";
  // count_params() (for logging and MFU) counts HF's parameters, not the router-bias buffers.
  int64_t n = 0;
  for (auto& [name, e] : params.items())
    if (name.find("e_score_correction_bias") == std::string::npos) n += int64_t(g->get(e).size());
  EXPECT_EQ(count_params(cfg).total, n);
}

TEST_F(ModelGolden, Loss) {
  double ref = g->h.at("loss");
  std::printf("loss %.9f, reference %.9f\n", stats.loss, ref);
  EXPECT_NEAR(stats.loss, ref, 1e-5 * std::fabs(ref));
  EXPECT_EQ(stats.aux_loss, 0.0);
  EXPECT_EQ(stats.z_loss, 0.0);
}

TEST_F(ModelGolden, LastLogits) {
  const json& e = g->h.at("logits");
  std::vector<float> all = g->get(e);  // [B, T, V]
  const int64_t V = cfg.vocab_size;
  ASSERT_EQ(Golden::shape(e), (Shape{B, T, V}));
  std::vector<float> ref;
  for (int64_t b = 0; b < B; ++b) ref.insert(ref.end(), all.begin() + ((b + 1) * T - 1) * V, all.begin() + (b + 1) * T * V);
  ASSERT_EQ(last.numel(), int64_t(ref.size()));
  double err = norm_err(last.f32(), ref);
  std::printf("normalised last-logits error %.2e\n", err);
  EXPECT_LT(err, 1e-5);
}

TEST_F(ModelGolden, EveryGradient) { expect_gradients(*model, 1e-4); }

// Activation recompute re-runs each block in backward: the same gradients.
TEST_F(ModelGolden, EveryGradientWithRecompute) {
  DeepSeekV3 m(cfg);
  m.set_recompute(true);
  load_weights(m);
  ForwardStats s = m.forward(ids.data(), targets.data(), B, T);
  m.backward(1.f);
  EXPECT_EQ(s.loss, stats.loss);
  expect_gradients(m, 1e-4);
}

// The router standalone on the reference's own router inputs: the same experts per token (as
// sets: HF's topk is unsorted) and the same combine weights.
TEST_F(ModelGolden, RouterChoicesAndWeights) {
  const int64_t N = B * T, K = cfg.experts_per_token;
  for (const json& layer : g->h.at("moe_layers")) {
    std::string prefix = "model.layers." + std::to_string(layer.at("layer").get<int>()) + ".mlp.gate";
    ParamStore ps;
    Router r;
    r.init(ps, prefix, cfg);
    ps.allocate();
    for (const char* suffix : {".weight", ".e_score_correction_bias"}) {
      std::vector<float> v = g->get(g->h.at("params").at(prefix + suffix));
      std::copy(v.begin(), v.end(), ps.param(ps.find(prefix + suffix)).f32());
    }
    std::vector<float> x = g->get(layer.at("input")), wref = g->get(layer.at("weights"));
    auto idx = layer.at("idx").get<std::vector<std::vector<int32_t>>>();
    ASSERT_EQ(int64_t(idx.size()), N);
    RouterActs a;
    r.forward(ps, x.data(), B, T, a);
    for (int64_t n = 0; n < N; ++n) {
      std::vector<std::pair<int32_t, float>> ours, ref;
      for (int64_t k = 0; k < K; ++k) {
        ours.emplace_back(a.idx_NK.data<int32_t>()[n * K + k], a.weights_NK.f32()[n * K + k]);
        ref.emplace_back(idx[n][k], wref[n * K + k]);
      }
      std::sort(ours.begin(), ours.end());
      std::sort(ref.begin(), ref.end());
      for (int64_t k = 0; k < K; ++k) {
        EXPECT_EQ(ours[k].first, ref[k].first) << prefix << " token " << n;
        EXPECT_NEAR(ours[k].second, ref[k].second, 1e-5) << prefix << " token " << n;
      }
    }
  }
}

// Inside the full forward: the expert loads per MoE layer are the counts of the reference's choices.
TEST_F(ModelGolden, ExpertLoads) {
  const auto& layers = g->h.at("moe_layers");
  ASSERT_EQ(model->moe_layers(), int(layers.size()));
  const int64_t E = cfg.routed_experts;
  for (int i = 0; i < model->moe_layers(); ++i) {
    std::vector<float> count(E, 0.f);
    for (const auto& tok : layers[i].at("idx"))
      for (int e : tok) count[e] += 1.f;
    for (int64_t e = 0; e < E; ++e)
      EXPECT_EQ(model->expert_load().f32()[i * E + e], count[e]) << "MoE layer " << i << " expert " << e;
  }
}

// Multi-token prediction against the reference's MTP modules: parameter names (DeepSeek-V3's
// release names, the shared embedding and head once), the main and per-module losses, and every
// gradient of loss + λ/D · Σ_k L_k (the embedding and head with both contributions), with and
// without recompute; the MTP blocks' expert loads follow the main model's.
TEST(ModelGoldenMTP, LossesGradientsAndLoads) {
  set_num_threads(2);
  const Golden g = Golden::load(kGoldenMTP);
  const ModelConfig cfg = config_from_hf(g.h.at("config"));
  ASSERT_EQ(cfg.mtp_depth, 2);
  const int64_t B = g.h.at("batch"), T = g.h.at("seq");
  const auto ids = g.h.at("ids").get<std::vector<int32_t>>(), targets = g.h.at("targets").get<std::vector<int32_t>>();
  const double lambda = g.h.at("mtp_loss_weight");
  const auto mtp_ref = g.h.at("mtp_losses").get<std::vector<double>>();
  for (bool recompute : {false, true}) {
    DeepSeekV3 m(cfg);
    m.set_recompute(recompute);
    m.set_mtp_loss_weight(lambda);
    ParamStore& ps = m.params();
    std::set<std::string> ours;
    for (const ParamInfo& p : ps.infos()) ours.insert(p.name);
    std::set<std::string> ref;
    for (auto& [name, e] : g.h.at("params").items()) {
      ref.insert(name);
      int id = ps.find(name);
      ASSERT_GE(id, 0) << name << " is missing from the model";
      ASSERT_EQ(shape_str(ps.param(id).shape()), shape_str(Golden::shape(e))) << name;
      std::vector<float> v = g.get(e);
      std::copy(v.begin(), v.end(), ps.param(id).f32());
    }
    EXPECT_EQ(ours, ref);
    ps.zero_grads();
    ForwardStats s = m.forward(ids.data(), targets.data(), B, T);
    m.backward(1.f);
    const double main_ref = g.h.at("loss"), mean_ref = (mtp_ref[0] + mtp_ref[1]) / 2;
    std::printf("loss %.9f (ref %.9f), mtp %.9f (ref %.9f)\n", s.loss, main_ref, s.mtp_loss, mean_ref);
    EXPECT_NEAR(s.loss, main_ref, 1e-5 * main_ref);
    EXPECT_NEAR(s.mtp_loss, mean_ref, 1e-5 * mean_ref);
    double worst = 0;
    std::string worst_name;
    for (auto& [name, e] : g.h.at("grads").items()) {
      int id = ps.find(name);
      double err = norm_err(ps.grad(id).f32(), g.get(e));
      EXPECT_LT(err, 1e-4) << name;
      if (err > worst) worst = err, worst_name = name;
    }
    std::printf("worst normalised gradient error %.2e (%s)%s\n", worst, worst_name.c_str(), recompute ? " recompute" : "");
    const auto& layers = g.h.at("moe_layers");
    ASSERT_EQ(m.moe_layers(), int(layers.size()));
    const int64_t E = cfg.routed_experts;
    for (int i = 0; i < m.moe_layers(); ++i) {
      std::vector<float> count(E, 0.f);
      for (const auto& tok : layers[i].at("idx"))
        for (int e : tok) count[e] += 1.f;
      for (int64_t e = 0; e < E; ++e)
        EXPECT_EQ(m.expert_load().f32()[i * E + e], count[e]) << "MoE layer " << i << " expert " << e;
    }
  }
  int64_t n = 0;  // count_params() counts the MTP modules too
  for (auto& [name, e] : g.h.at("params").items())
    if (name.find("e_score_correction_bias") == std::string::npos) n += int64_t(g.get(e).size());
  EXPECT_EQ(count_params(cfg).total, n);
}
