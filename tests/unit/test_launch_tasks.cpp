// Multiple-choice tasks (launch/tasks.h): the task file's checks (FILE:LINE and what was expected),
// acc / acc_norm / standard errors from known log-likelihoods, and the batched, padded, left-cut
// scorer against a naive reference that rebuilds every continuation token's log-probability from
// last_logits() of its own prefix.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/rng.h"
#include "launch/tasks.h"
#include "test_data_util.h"

using namespace moe;
using moe::test::error_of;
using moe::test::TempDir;
using moe::test::write_file;

namespace {

ModelConfig tiny_model(int vocab) {
  ModelConfig c;
  c.vocab_size = vocab; c.hidden = 16; c.layers = 2; c.dense_layers = 1; c.dense_inter = 24;
  c.heads = 2; c.q_lora_rank = 12; c.kv_lora_rank = 8; c.qk_nope_dim = 4; c.qk_rope_dim = 4; c.v_head_dim = 6;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 8;
  c.init_std = 0.3;
  return c;
}

std::vector<int32_t> random_ids(int64_t n, uint64_t stream, int V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t(rng_bits(9, stream, uint64_t(i)) % uint64_t(V));
  return ids;
}

// log p(continuation | context) one token at a time: each token's logits from last_logits() of the
// window up to it, the window starting where the scorer's does (the last T tokens before the end).
double naive_loglik(DeepSeekV3& m, const ScoreRequest& r, int T) {
  std::vector<int32_t> full = r.context;
  full.insert(full.end(), r.continuation.begin(), r.continuation.end());
  const int64_t start = std::max<int64_t>(0, int64_t(full.size()) - 1 - T), V = m.config().vocab_size;
  double ll = 0;
  for (size_t k = r.context.size(); k < full.size(); ++k) {
    Tensor logits = m.last_logits(full.data() + start, 1, int64_t(k) - start);
    const float* z = logits.f32();
    double mx = z[0], sum = 0;
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
    ll += double(z[full[k]]) - mx - std::log(sum);
  }
  return ll;
}

const char* kGood = R"({"context": "a", "choices": ["b", "cc"], "gold": 1})";

}  // namespace

TEST(TaskFile, LoadsItemsSkipsBlankLinesAndNamesTheTask) {
  TempDir dir;
  write_file(dir / "my_task.jsonl", std::string(kGood) + "\n\n" +
                                        R"({"context": "", "choices": ["x"], "gold": 0, "id": 7})" + "\n");
  TaskSet t = load_task(dir / "my_task.jsonl");
  EXPECT_EQ(t.name, "my_task");
  ASSERT_EQ(t.items.size(), 2u);
  EXPECT_EQ(t.items[0].choices, (std::vector<std::string>{"b", "cc"}));
  EXPECT_EQ(t.items[0].gold, 1);
  EXPECT_EQ(t.items[1].line, 3);
  EXPECT_EQ(t.items[1].context, "");
}

TEST(TaskFile, ErrorsNameFileLineAndWhatWasExpected) {
  TempDir dir;
  const std::string f = dir / "t.jsonl";
  struct Case {
    std::string line, message;
  } cases[] = {
      {R"({"context": "a", "choices": ["b"], "gold": 0)", "malformed JSON"},
      {R"(["a"])", "not a JSON object"},
      {R"({"choices": ["b"], "gold": 0})", "missing key \"context\""},
      {R"({"context": "a", "gold": 0})", "missing key \"choices\""},
      {R"({"context": "a", "choices": ["b"]})", "missing key \"gold\""},
      {R"({"context": 3, "choices": ["b"], "gold": 0})", "\"context\" is not a string"},
      {R"({"context": "a", "choices": [], "gold": 0})", "\"choices\" is empty"},
      {R"({"context": "a", "choices": "b", "gold": 0})", "\"choices\" is not an array"},
      {R"({"context": "a", "choices": ["b", 1], "gold": 0})", "choice 1 is not a string"},
      {R"({"context": "a", "choices": ["b", ""], "gold": 0})", "choice 1 is empty"},
      {R"({"context": "a", "choices": ["b", "c"], "gold": 2})", "\"gold\" is 2 (expected 0 <= gold < 2"},
      {R"({"context": "a", "choices": ["b", "c"], "gold": -1})", "\"gold\" is -1"},
      {R"({"context": "a", "choices": ["b", "c"], "gold": 0.5})", "\"gold\" is not an integer"},
  };
  for (const Case& c : cases) {
    write_file(f, std::string(kGood) + "\n" + c.line + "\n");
    std::string msg = error_of([&] { load_task(f); });
    EXPECT_NE(msg.find(f + ":2: " + c.message), std::string::npos) << c.line << "\n -> " << msg;
  }
  write_file(f, "\n \n");
  EXPECT_NE(error_of([&] { load_task(f); }).find(f + ": no items"), std::string::npos);
  EXPECT_NE(error_of([&] { load_task(dir / "missing.jsonl"); }).find("missing.jsonl: cannot open"), std::string::npos);
}

TEST(TaskScores, AccAccNormStderrAndChance) {
  TaskSet t;
  t.name = "t";
  // Item 0: gold 0 wins raw and per byte. Item 1: raw picks the short choice 0 (-4 > -6), per byte
  // the long gold 1 (-6 / 3 bytes = -2 > -4 / 1). Item 2: a tie goes to the first choice (not
  // gold). Item 3: three choices, gold 2 wins both.
  t.items = {{"c", {"a", "b"}, 0}, {"c", {"x", "yyy"}, 1}, {"c", {"p", "q"}, 1}, {"c", {"a", "b", "c"}, 2}};
  std::vector<double> ll = {-1, -2, -4, -6, -3, -3, -5, -4, -1};
  TaskResult r = summarize_task(t, ll);
  EXPECT_EQ(r.n, 4);
  EXPECT_DOUBLE_EQ(r.acc, 2.0 / 4);
  EXPECT_DOUBLE_EQ(r.acc_norm, 3.0 / 4);
  EXPECT_DOUBLE_EQ(r.acc_stderr, std::sqrt(0.5 * 0.5 / 3));
  EXPECT_DOUBLE_EQ(r.acc_norm_stderr, std::sqrt(0.75 * 0.25 / 3));
  EXPECT_DOUBLE_EQ(r.chance, (0.5 + 0.5 + 0.5 + 1.0 / 3) / 4);
  t.items.resize(1);
  EXPECT_TRUE(std::isnan(summarize_task(t, {-1, -2}).acc_stderr));
}

TEST(TaskScores, BatchedScorerMatchesNaiveReference) {
  const int V = 32, T = 12;
  DeepSeekV3 m(tiny_model(V));
  m.params().initialize(5);
  // Lengths that fit, fill the window exactly, and need the context cut from the left.
  std::vector<ScoreRequest> reqs;
  const int64_t sizes[][2] = {{1, 1}, {3, 4}, {8, 5}, {20, 3}, {2, 12}, {5, 1}, {11, 2}};
  for (size_t i = 0; i < std::size(sizes); ++i)
    reqs.push_back({random_ids(sizes[i][0], 100 + i, V), random_ids(sizes[i][1], 200 + i, V)});
  std::vector<double> one = score_continuations(m, reqs, 1, T), three = score_continuations(m, reqs, 3, T);
  for (size_t i = 0; i < reqs.size(); ++i) {
    const double ref = naive_loglik(m, reqs[i], T);
    EXPECT_LT(ref, 0);
    EXPECT_NEAR(one[i], ref, 1e-4 * std::fabs(ref)) << "request " << i;
    EXPECT_NEAR(three[i], ref, 1e-4 * std::fabs(ref)) << "request " << i << " (batched, padded)";
  }
}

TEST(TaskScores, EvaluateTaskTokenizesAndScoresEveryChoice) {
  const int T = 16;
  DeepSeekV3 m(tiny_model(256));
  m.params().initialize(3);
  auto tok = make_tokenizer("byte");
  TempDir dir;
  write_file(dir / "t.jsonl", R"({"context": "To be", "choices": [" or", " not to"], "gold": 0})" "\n"
                              R"({"context": "", "choices": ["abc", "d", "ef"], "gold": 2})" "\n");
  TaskSet task = load_task(dir / "t.jsonl");
  TaskResult r = evaluate_task(m, *tok, task, 4, T);
  auto ids = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
  const std::vector<int32_t> eos = {int32_t(tok->eos_id())};
  std::vector<ScoreRequest> reqs = {{ids("To be"), ids(" or")}, {ids("To be"), ids(" not to")},
                                    {eos, ids("abc")}, {eos, ids("d")}, {eos, ids("ef")}};
  TaskResult expected = summarize_task(task, score_continuations(m, reqs, 1, T));
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.acc, expected.acc);
  EXPECT_EQ(r.acc_norm, expected.acc_norm);
  EXPECT_DOUBLE_EQ(r.chance, (0.5 + 1.0 / 3) / 2);

  write_file(dir / "long.jsonl", R"({"context": "a", "choices": ["b", "0123456789abcdefg"], "gold": 0})" "\n");
  std::string msg = error_of([&] { evaluate_task(m, *tok, load_task(dir / "long.jsonl"), 4, T); });
  EXPECT_NE(msg.find("long.jsonl:1: choice 1 is 17 tokens (expected at most the model's seq_len, 16)"), std::string::npos)
      << msg;
}
