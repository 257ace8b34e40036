// The router (model/router.h) on cases small enough to compute by hand: E = 4 experts, K = 2 per
// token, D = 2, two tokens x0 = [1, 0], x1 = [0, 1], so logits[n, e] = W[e, n] and W's columns are
// chosen logits. Logits are logs of odds, so the sigmoid scores are round numbers:
//   token 0: logits [ln 4, 0, -ln 4, ln 3]   -> s = [0.8, 0.5, 0.2, 0.75]
//   token 1: logits [-ln 3, ln 9, 0, ln 1.5] -> s = [0.25, 0.9, 0.5, 0.6]
// Combine weights are compared per expert (the order of the K choices is not part of the contract).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "framework/threads.h"
#include "model/moe_layer.h"
#include "model/router.h"

using namespace moe;

namespace {

const float kLogits[2][4] = {{std::log(4.f), 0.f, -std::log(4.f), std::log(3.f)},
                             {-std::log(3.f), std::log(9.f), 0.f, std::log(1.5f)}};
const float kX[2 * 2] = {1.f, 0.f, 0.f, 1.f};  // [N, D]

struct Case {
  ModelConfig c;
  ParamStore ps;
  Router r;
  RouterActs a;

  // routed_scaling 2 everywhere, so each token's two weights sum to 2.
  explicit Case(const std::string& score = "sigmoid", int groups = 1, int groups_per_token = 1) {
    set_num_threads(1);
    c.hidden = 2; c.routed_experts = 4; c.experts_per_token = 2;
    c.router.score = score;
    c.router.routed_scaling = 2.0;
    c.router.groups = groups;
    c.router.groups_per_token = groups_per_token;
    c.router.aux_loss_coef = 0;
    c.router.z_loss_coef = 0;
    r.init(ps, "gate", c);
    ps.allocate();
    float* W = ps.param(r.w).f32();  // [E, D]
    for (int e = 0; e < 4; ++e)
      for (int n = 0; n < 2; ++n) W[e * 2 + n] = kLogits[n][e];
  }
  void set_bias(std::vector<float> b) { std::copy(b.begin(), b.end(), ps.param(r.bias).f32()); }
  void forward() { r.forward(ps, kX, /*B=*/1, /*T=*/2, a); }
  // Token n's choices as expert -> combine weight.
  std::map<int, float> chosen(int n) const {
    std::map<int, float> m;
    for (int k = 0; k < 2; ++k) m[a.idx_NK.data<int32_t>()[n * 2 + k]] = a.weights_NK.f32()[n * 2 + k];
    return m;
  }
};

void expect_choice(const Case& t, int n, std::map<int, float> want) {
  std::map<int, float> got = t.chosen(n);
  ASSERT_EQ(got.size(), want.size()) << "token " << n << " chose one expert twice";
  for (auto [e, w] : want) {
    ASSERT_TRUE(got.count(e)) << "token " << n << " did not choose expert " << e;
    EXPECT_NEAR(got[e], w, 1e-5) << "token " << n << " expert " << e;
  }
}

}  // namespace

TEST(Router, SigmoidTopKNormalisedAndScaled) {
  Case t;
  t.forward();
  EXPECT_NEAR(t.a.scores_NE.f32()[0], 0.8f, 1e-6);
  EXPECT_NEAR(t.a.scores_NE.f32()[4 + 1], 0.9f, 1e-6);
  // token 0: top-2 of [0.8, 0.5, 0.2, 0.75] = {0, 3}; 2 * 0.8 / 1.55 = 1.032258, 2 * 0.75 / 1.55 = 0.967742
  expect_choice(t, 0, {{0, 1.032258f}, {3, 0.967742f}});
  // token 1: top-2 of [0.25, 0.9, 0.5, 0.6] = {1, 3}; 2 * 0.9 / 1.5 = 1.2, 2 * 0.6 / 1.5 = 0.8
  expect_choice(t, 1, {{1, 1.2f}, {3, 0.8f}});
}

TEST(Router, BiasSteersTheChoiceButNotTheWeights) {
  Case t;
  t.set_bias({0.f, 0.f, 0.65f, 0.f});
  t.forward();
  // token 0: choice [0.8, 0.5, 0.85, 0.75] -> {2, 0}; weights from s: 2 * 0.2 / 1.0 = 0.4, 2 * 0.8 / 1.0 = 1.6
  expect_choice(t, 0, {{0, 1.6f}, {2, 0.4f}});
  // token 1: choice [0.25, 0.9, 1.15, 0.6] -> {2, 1}; 2 * 0.5 / 1.4 = 0.714286, 2 * 0.9 / 1.4 = 1.285714
  expect_choice(t, 1, {{1, 1.285714f}, {2, 0.714286f}});
}

TEST(Router, GroupLimitedRoutingKeepsTheBestGroup) {
  Case t("sigmoid", /*groups=*/2, /*groups_per_token=*/1);  // groups {0, 1} and {2, 3}
  t.forward();
  // token 0: group scores (sum of top-2) 0.8 + 0.5 = 1.3 > 0.2 + 0.75 = 0.95: keep group 0, so
  // {0, 1} instead of the free choice {0, 3}; 2 * 0.8 / 1.3 = 1.230769, 2 * 0.5 / 1.3 = 0.769231
  expect_choice(t, 0, {{0, 1.230769f}, {1, 0.769231f}});
  // token 1: 0.25 + 0.9 = 1.15 > 0.5 + 0.6 = 1.1: {0, 1} instead of {1, 3};
  // 2 * 0.25 / 1.15 = 0.434783, 2 * 0.9 / 1.15 = 1.565217
  expect_choice(t, 1, {{0, 0.434783f}, {1, 1.565217f}});
}

// Hugging Face sets the losing groups' choice scores to 0, not -inf: an expert of the kept group
// whose score + bias is negative loses to a zeroed one (ties among zeros go to the lower index).
TEST(Router, LosingGroupsAreZeroedNotMinusInfinity) {
  Case t("sigmoid", 2, 1);
  t.set_bias({0.5f, -0.6f, 0.f, 0.f});
  t.forward();
  // token 0: choice [1.3, -0.1, 0.2, 0.75]; groups 1.2 > 0.95 keep group 0 -> [1.3, -0.1, 0, 0]
  // -> {0, 2}: 2 * 0.8 / 1.0 = 1.6, 2 * 0.2 / 1.0 = 0.4 (with -inf it would be {0, 1})
  expect_choice(t, 0, {{0, 1.6f}, {2, 0.4f}});
  // token 1: choice [0.75, 0.3, 0.5, 0.6]; groups 1.05 < 1.1 keep group 1 -> {2, 3}:
  // 2 * 0.5 / 1.1 = 0.909091, 2 * 0.6 / 1.1 = 1.090909
  expect_choice(t, 1, {{2, 0.909091f}, {3, 1.090909f}});
}

TEST(Router, SoftmaxScores) {
  Case t("softmax");
  t.forward();
  // token 0: exp(logits) = [4, 1, 0.25, 3], sum 8.25 -> s0 = 0.484848; top-2 {0, 3}: 2*4/7, 2*3/7
  EXPECT_NEAR(t.a.scores_NE.f32()[0], 4.f / 8.25f, 1e-6);
  expect_choice(t, 0, {{0, 1.142857f}, {3, 0.857143f}});
  // token 1: exp = [1/3, 9, 1, 1.5]; top-2 {1, 3}: 2*9/10.5 = 1.714286, 2*1.5/10.5 = 0.285714
  expect_choice(t, 1, {{1, 1.714286f}, {3, 0.285714f}});
}

// The MoE layer counts the load of its router's choices (from the dispatch plan).
TEST(Router, LoadCountsAccumulate) {
  Case t;
  t.c.expert_inter = 2;
  t.c.shared_experts = 0;
  ParamStore ps;
  MoELayer moe;
  moe.init(ps, "mlp", t.c, ModelPlacement{});
  ps.allocate();
  ps.initialize(1);
  std::copy(t.ps.param(t.r.w).f32(), t.ps.param(t.r.w).f32() + 8, ps.param(moe.gate.w).f32());
  std::vector<float> load{1.f, 0.f, 0.f, 0.f}, y(4);  // counts from an earlier micro-batch
  MoEActs a;
  moe.forward(ps, y.data(), kX, /*B=*/1, /*T=*/2, a, load.data());
  // choices {0, 3} and {1, 3}
  EXPECT_EQ(load, (std::vector<float>{2.f, 1.f, 0.f, 2.f}));
}

TEST(Router, UpdateBiasSignRule) {
  Case t;
  t.set_bias({0.1f, 0.1f, 0.1f, 0.1f});
  // mean load 2: expert 0 over-loaded goes down, expert 1 under-loaded goes up, 2 and 3 stay.
  std::vector<float> load{3.f, 1.f, 2.f, 2.f};
  t.r.update_bias(t.ps, load.data(), 0.01f);
  const float* b = t.ps.param(t.r.bias).f32();
  EXPECT_FLOAT_EQ(b[0], 0.09f);
  EXPECT_FLOAT_EQ(b[1], 0.11f);
  EXPECT_FLOAT_EQ(b[2], 0.1f);
  EXPECT_FLOAT_EQ(b[3], 0.1f);
}

// Gradient through w_k = c s_k / S (S = sum of the chosen s) and the sigmoid, by hand.
TEST(Router, BackwardThroughNormalisedWeights) {
  Case t;
  t.forward();
  // dL/dw = 1 for token 0's expert 0, 0 otherwise.
  std::vector<float> dw(4, 0.f), dx(4, 0.f);
  for (int k = 0; k < 2; ++k) dw[k] = t.a.idx_NK.data<int32_t>()[k] == 0 ? 1.f : 0.f;
  t.r.backward(t.ps, dx.data(), dw.data(), kX, 1, 2, t.a, 1.f);
  // ds_0 = 2 (1/1.55 - 0.8/1.55^2) = 0.624350, ds_3 = 2 (0 - 0.8/1.55^2) = -0.665973
  // dlogit = ds s (1 - s): e0 0.624350 * 0.16 = 0.099896, e3 -0.665973 * 0.1875 = -0.124870
  // dW[e] = dlogit_e x0 = [dlogit_e, 0]; dx0 = sum_e dlogit_e W[e] = 0.099896 [ln 4, -ln 3] - 0.124870 [ln 3, ln 1.5]
  const float* dW = t.ps.grad(t.r.w).f32();
  std::vector<float> want_dW{0.099896f, 0, 0, 0, 0, 0, -0.124870f, 0};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(dW[i], want_dW[i], 1e-5) << "dW element " << i;
  EXPECT_NEAR(dx[0], 0.099896f * std::log(4.f) - 0.124870f * std::log(3.f), 1e-5);
  EXPECT_NEAR(dx[1], -0.099896f * std::log(3.f) - 0.124870f * std::log(1.5f), 1e-5);
  EXPECT_EQ(dx[2], 0.f);  // token 1 carries no gradient
  EXPECT_EQ(dx[3], 0.f);
}
