// Config loading: defaults, presets, round trip, and that every kind of bad input gives one
// moe::Error naming the file, the line (or the --set override) and the key.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/error.h"

namespace fs = std::filesystem;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moe_test_config_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text, const std::string& name = "bad.yaml") {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  // Loads `text` from a file and returns the error message ("" if it loaded).
  std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
    try {
      moe::load_config(write(text), overrides);
    } catch (const moe::Error& e) {
      return e.what();
    }
    return "";
  }

  // The error must start with "<file>:<line>: " and mention each of `parts`.
  void expect_error_at(const std::string& text, int line, std::initializer_list<const char*> parts,
                       const std::vector<std::string>& overrides = {}) {
    std::string msg = error_of(text, overrides);
    std::string where = (dir_ / "bad.yaml").string() + ":" + std::to_string(line) + ": ";
    EXPECT_EQ(msg.rfind(where, 0), 0u) << "yaml:\n" << text << "message: " << msg;
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }

  // The error must name the override ("--set <key>: ") and mention each of `parts`.
  void expect_override_error(const std::string& text, const std::vector<std::string>& overrides,
                             const std::string& key, std::initializer_list<const char*> parts) {
    std::string msg = error_of(text, overrides);
    EXPECT_EQ(msg.rfind("--set " + key + ": ", 0), 0u) << "message: " << msg;
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }

  fs::path dir_;
};

// ctest sets MOE_SOURCE_DIR; run by hand, the repo root is three levels above this file.
fs::path source_dir() {
  const char* s = getenv("MOE_SOURCE_DIR");
  return s ? fs::path(s) : fs::path(__FILE__).parent_path().parent_path().parent_path();
}

}  // namespace

TEST_F(ConfigTest, MissingKeysTakeTheDefaults) {
  moe::Config c = moe::parse_config("device: auto\n", "defaults.yaml");
  moe::Config d;
  d.source = "defaults.yaml";
  EXPECT_EQ(c, d);
  EXPECT_EQ(c.model.router.score, "sigmoid");
  EXPECT_EQ(c.train.lr, 3e-4);
  // An empty section keeps its defaults too.
  EXPECT_EQ(moe::parse_config("model:\n  router:\ntrain:\n", "x"), (d.source = "x", d));
}

TEST_F(ConfigTest, EveryPresetLoadsAndRoundTrips) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(source_dir() / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    moe::Config c;
    ASSERT_NO_THROW(c = moe::load_config(entry.path().string()));
    EXPECT_EQ(c.source, entry.path().string());
    EXPECT_EQ(moe::parse_config(moe::config_to_yaml(c), c.source), c);
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST_F(ConfigTest, TinyPreset) {
  moe::Config c = moe::load_config((source_dir() / "configs/tiny.yaml").string(), {"data.path=/tmp/shards"});
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.model.hidden, 32);
  EXPECT_EQ(c.model.layers, 2);
  EXPECT_EQ(c.model.dense_layers, 1);
  EXPECT_EQ(c.model.routed_experts, 4);
  EXPECT_EQ(c.model.experts_per_token, 2);
  EXPECT_EQ(c.data.seq_len, 32);
  EXPECT_EQ(c.train.steps, 20);
  EXPECT_EQ(c.data.path, "/tmp/shards");
}

TEST_F(ConfigTest, RoundTripIsExact) {
  moe::Config c;
  c.run.name = "true";                // looks like a bool
  c.run.out_dir = "runs/a \"b\"\\c\n";  // quotes, backslash, control character
  c.run.seed = UINT64_MAX;
  c.data.path = "";
  c.model.router.score = "softmax";
  c.model.router.bias_update_rate = 1.0 / 3.0;
  c.model.rope_theta = 1e6;
  c.model.rms_norm_eps = 1e-300;
  c.model.tie_embeddings = true;
  c.train.lr = 0.1 + 0.2;  // not exactly 0.3
  c.train.min_lr = 5e-324;  // subnormal
  c.train.steps = int64_t(1) << 40;
  c.train.warmup = 7;
  c.checkpoint.resume = "runs/x/checkpoints/step-00000100";
  c.device = "cuda";
  c.source = "again";
  std::string yaml = moe::config_to_yaml(c);
  moe::Config back = moe::parse_config(yaml, "again");
  EXPECT_EQ(back, c) << yaml;
  EXPECT_EQ(moe::config_to_yaml(back), yaml);
  EXPECT_NE(yaml.find("    groups_per_token: 1\n"), std::string::npos) << yaml;  // nested router
}

TEST_F(ConfigTest, FileErrors) {
  std::string missing = (dir_ / "nope.yaml").string();
  try {
    moe::load_config(missing);
    ADD_FAILURE() << "loaded a missing file";
  } catch (const moe::Error& e) {
    EXPECT_EQ(std::string(e.what()), missing + ": cannot read config file (No such file or directory)");
  }
  EXPECT_THROW(moe::load_config(dir_.string()), moe::Error);  // a folder
  expect_error_at("", 1, {"empty", "expected a mapping with sections run, model, data"});
  expect_error_at("# nothing but a comment\n", 1, {"empty"});
  expect_error_at("model:\n  hidden: [1, 2\n  layers: 3\n", 3, {"malformed YAML"});
  expect_error_at("model:\n  hidden: 1\n  x: {\n", 3, {"malformed YAML"});  // found at the end of input
  expect_error_at("- 1\n- 2\n", 1, {"top level is a sequence", "expected a mapping"});
  expect_error_at("just text\n", 1, {"top level", "expected a mapping"});
  expect_error_at("model:\n  hidden: 8\n---\ntrain: {}\n", 4, {"second YAML document"});
  // yaml-cpp's LoadAll never returns on a stray ',' (found by tests/fuzz/fuzz_config).
  expect_error_at(",\n", 1, {"malformed YAML", "column 1", "','"});
  expect_error_at("model:\n  hidden: 8\n\n,ata:\n  path: x\n", 4, {"malformed YAML"});
}

TEST_F(ConfigTest, UnknownKeys) {
  expect_error_at("model:\n  hidden: 32\n  hiden: 32\n", 3,
                  {"unknown key 'model.hiden'", "did you mean 'hidden'", "expected one of: vocab_size, hidden, layers"});
  expect_error_at("run:\n  name: x\nmodle:\n  hidden: 3\n", 3,
                  {"unknown key 'modle'", "run, model, data, train, parallel, checkpoint, device"});
  expect_error_at("model:\n  router:\n    score: sigmoid\n    topk: 2\n", 4,
                  {"unknown key 'model.router.topk'", "score, bias_update_rate"});
  expect_error_at("model: {hidden: 8, router: {scores: softmax}}\n", 1, {"'model.router.scores'", "did you mean 'score'"});
  expect_error_at("router:\n  score: softmax\n", 1, {"unknown key 'router'"});
  expect_error_at("run: {name: x}\n\"\": 1\n", 2, {"unknown key ''"});
  expect_error_at("model:\n  hidden: 8\n  hidden: 9\n", 3, {"duplicate key 'model.hidden'", ":2"});
  expect_error_at("model:\n  hidden: 8\ntrain: {}\nmodel:\n  layers: 2\n", 4, {"duplicate section 'model'", "line 1"});
  expect_error_at("model: 5\n", 1, {"section 'model' is a value", "expected a mapping with keys vocab_size"});
  expect_error_at("model:\n  router: [sigmoid]\n", 2, {"section 'model.router' is a sequence"});
}

TEST_F(ConfigTest, WrongTypes) {
  expect_error_at("run: {name: x}\nmodel:\n  layers: four\n", 3, {"model.layers is 'four'", "expected an integer"});
  expect_error_at("model:\n  layers: 2.5\n", 2, {"model.layers is '2.5'", "expected an integer"});
  expect_error_at("model:\n  layers: 99999999999\n", 2, {"model.layers", "2147483647"});
  expect_error_at("model:\n  layers:\n", 2, {"model.layers is empty", "expected an integer"});
  expect_error_at("train:\n  lr: [1]\n", 2, {"train.lr is a sequence", "expected a finite number"});
  expect_error_at("train:\n  lr: .inf\n", 2, {"train.lr", "finite number"});
  expect_error_at("train:\n  lr: 1e-3x\n", 2, {"train.lr is '1e-3x'"});
  expect_error_at("train:\n  recompute: maybe\n", 2, {"train.recompute is 'maybe'", "expected true or false"});
  expect_error_at("run:\n  seed: -1\n", 2, {"run.seed is '-1'", "non-negative integer"});
  expect_error_at("run:\n  name: {a: 1}\n", 2, {"run.name is a mapping", "expected a string"});
  // Accepted spellings.
  moe::Config c = moe::parse_config("model: {layers: +3, rope_theta: 5e5}\ntrain: {lr: 1e-3, recompute: yes}\n", "ok");
  EXPECT_EQ(c.model.layers, 3);
  EXPECT_EQ(c.model.rope_theta, 5e5);
  EXPECT_EQ(c.train.lr, 1e-3);
  EXPECT_TRUE(c.train.recompute);
}

TEST_F(ConfigTest, OutOfRange) {
  struct Case {
    const char* yaml;
    int line;
    const char* key;
    const char* expected;
  };
  const Case cases[] = {
      {"run:\n  name: \"\"\n", 2, "run.name", "expected a name"},
      {"model:\n  layers: 2\n  hidden: 0\n", 3, "model.hidden is 0", "expected > 0"},
      {"model:\n  hidden: -4\n", 2, "model.hidden is -4", "> 0"},
      {"model:\n  layers: 0\n", 2, "model.layers", "> 0"},
      {"model:\n  q_lora_rank: -1\n", 2, "model.q_lora_rank", ">= 0"},
      {"model:\n  kv_lora_rank: 0\n", 2, "model.kv_lora_rank", "> 0"},
      {"model:\n  qk_rope_dim: 7\n", 2, "model.qk_rope_dim is 7", "even"},
      {"model:\n  router:\n    routed_scaling: 0\n", 3, "model.router.routed_scaling", "> 0"},
      {"model:\n  router:\n    aux_loss_coef: -0.1\n", 3, "model.router.aux_loss_coef", ">= 0"},
      {"data:\n  seq_len: 0\n", 2, "data.seq_len", "> 0"},
      {"train:\n  micro_batch: 0\n", 2, "train.micro_batch", "> 0"},
      {"train:\n  steps: -1\n", 2, "train.steps", ">= 0"},
      {"train:\n  lr: -1e-3\n", 2, "train.lr", ">= 0"},
      {"train:\n  beta1: 1.0\n", 2, "train.beta1 is 1", "0 <= beta1 < 1"},
      {"train:\n  beta2: -0.5\n", 2, "train.beta2", "0 <= beta2 < 1"},
      {"train:\n  eval_batches: 0\n", 2, "train.eval_batches", "> 0"},
      {"parallel:\n  ep: 0\n", 2, "parallel.ep", "> 0"},
      {"checkpoint:\n  keep_last: -1\n", 2, "checkpoint.keep_last", ">= 0"},
      {"checkpoint:\n  resume: \"\"\n", 2, "checkpoint.resume", "auto | never | a checkpoint path"},
      {"model:\n  router:\n    score: relu\n", 3, "model.router.score is 'relu'", "sigmoid | softmax"},
      {"train:\n  schedule: step\n", 2, "train.schedule", "cosine | constant | linear | wsd"},
      {"train:\n  decay_shape: exp\n", 2, "train.decay_shape is 'exp'", "linear | cosine | sqrt"},
      {"train:\n  sample_tokens: 0\n", 2, "train.sample_tokens", "> 0"},
      {"train:\n  sample_temperature: -1\n", 2, "train.sample_temperature", ">= 0"},
      {"train:\n  stop_after: -3\n", 2, "train.stop_after", ">= 0"},
      {"train:\n  time_limit: -0.5\n", 2, "train.time_limit", ">= 0"},
      {"train:\n  expert_report_every: -1\n", 2, "train.expert_report_every", ">= 0"},
      {"train:\n  max_bad_steps: -1\n", 2, "train.max_bad_steps is -1", ">= 0"},
      {"train:\n  max_rollbacks: -2\n", 2, "train.max_rollbacks is -2", ">= 0"},
      {"train:\n  spike_window: 1\n", 2, "train.spike_window is 1", "0 (off) or a window of at least 2 losses"},
      {"train:\n  spike_window: -5\n", 2, "train.spike_window is -5", "0 (off) or a window of at least 2"},
      {"train:\n  spike_zscore: 0\n", 2, "train.spike_zscore is 0", "> 0"},
      {"train:\n  precision: fp16\n", 2, "train.precision is 'fp16'", "fp32 | bf16 | fp8"},
      {"run: {name: x}\ndevice: gpu\n", 2, "device is 'gpu'", "auto | cpu | cuda"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.yaml);
    expect_error_at(k.yaml, k.line, {k.key, k.expected});
  }
  // Resume takes a path as well as auto and never.
  EXPECT_EQ(moe::parse_config("checkpoint: {resume: runs/a/checkpoints/step-00000010}\n", "x").checkpoint.resume,
            "runs/a/checkpoints/step-00000010");
}

TEST_F(ConfigTest, InconsistentCombinationsBlameTheLaterKey) {
  // experts_per_token vs routed_experts, in either order: the later line is named.
  expect_error_at("model:\n  experts_per_token: 6\n  routed_experts: 4\n", 3,
                  {"model.experts_per_token is 6 but model.routed_experts is 4", "experts_per_token <= routed_experts"});
  expect_error_at("model:\n  routed_experts: 4\n  experts_per_token: 6\n", 3, {"experts_per_token <= routed_experts"});
  // Only one of them given: that one is blamed.
  expect_error_at("run: {name: x}\nmodel:\n  experts_per_token: 9\n", 3, {"experts_per_token <= routed_experts"});
  expect_error_at("model:\n  layers: 2\n  dense_layers: 3\n", 3, {"model.dense_layers is 3", "dense_layers <= layers"});
  expect_error_at("model:\n  routed_experts: 0\n", 2, {"model.routed_experts is 0", "routed_experts > 0"});
  expect_error_at("model:\n  routed_experts: 6\n  router:\n    groups: 4\n", 4, {"groups to divide routed_experts"});
  expect_error_at("model:\n  routed_experts: 4\n  router:\n    groups: 4\n", 4, {"at least 2 experts per group"});
  expect_error_at("model:\n  router:\n    groups_per_token: 3\n    groups: 2\n", 4, {"groups_per_token <= groups"});
  expect_error_at("model:\n  routed_experts: 8\n  experts_per_token: 3\n  router: {groups: 4, groups_per_token: 1}\n", 4,
                  {"hold only 2 experts", "experts_per_token <= groups_per_token * routed_experts / groups"});
  expect_error_at("model:\n  routed_experts: 8\nparallel:\n  ep: 3\n", 4, {"parallel.ep is 3", "ep to divide routed_experts"});
  expect_error_at("train:\n  precision: bf16\nparallel:\n  fp8_dispatch: true\n", 4,
                  {"parallel.fp8_dispatch is true but train.precision is bf16", "train.precision fp8"});
  EXPECT_NO_THROW(moe::parse_config("train: {precision: fp8}\nparallel: {fp8_dispatch: true}\n", "x"));
  expect_error_at("train:\n  min_lr: 1e-2\n  lr: 1e-3\n", 3, {"train.min_lr is 0.01 but train.lr is 0.001", "min_lr <= lr"});
  expect_error_at("train:\n  steps: 10\n  warmup: 11\n", 3, {"warmup <= steps"});
  // WSD: decay_steps in [1, steps - warmup], and only with wsd.
  expect_error_at("train:\n  steps: 100\n  warmup: 10\n  schedule: wsd\n", 4,
                  {"train.decay_steps is 0 with train.schedule wsd", "1 <= decay_steps <= steps - warmup = 90"});
  expect_error_at("train:\n  steps: 100\n  warmup: 10\n  schedule: wsd\n  decay_steps: 91\n", 5,
                  {"train.decay_steps is 91", "steps - warmup = 90"});
  expect_error_at("train:\n  decay_steps: 20\n", 2, {"train.decay_steps is 20 but train.schedule is cosine",
                                                      "decay_steps only with schedule wsd"});
  EXPECT_NO_THROW(moe::parse_config("train: {steps: 100, warmup: 10, schedule: wsd, decay_steps: 90}\n", "x"));
  // All-dense models need no experts; steps 0 (only set up) allows any warmup.
  EXPECT_NO_THROW(moe::parse_config("model: {layers: 2, dense_layers: 2, routed_experts: 0}\n", "x"));
  EXPECT_NO_THROW(moe::parse_config("train: {steps: 0, warmup: 100}\n", "x"));
  EXPECT_NO_THROW(moe::parse_config("model: {routed_experts: 8, experts_per_token: 4, router: {groups: 4, "
                                    "groups_per_token: 2}}\nparallel: {ep: 4}\n", "x"));
}

TEST_F(ConfigTest, Overrides) {
  std::string path = write("model:\n  layers: 4\ntrain:\n  lr: 3e-4\n", "ok.yaml");
  moe::Config c = moe::load_config(path, {"train.lr=1e-3", "model.router.score=softmax", "data.path=foo",
                                          "model.layers=6", "model.layers=8", " train.recompute =true"});
  EXPECT_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.model.router.score, "softmax");
  EXPECT_EQ(c.data.path, "foo");
  EXPECT_EQ(c.model.layers, 8);  // the last override wins
  EXPECT_TRUE(c.train.recompute);
  EXPECT_EQ(moe::load_config(path, {"data.path=a=b"}).data.path, "a=b");  // split at the first '='
  EXPECT_EQ(moe::parse_config("train: {lr: 1}\n", "text", {"train.lr=0.5"}).train.lr, 0.5);

  const std::string ok = "model:\n  layers: 4\n";
  expect_override_error(ok, {"model.hiden=3"}, "model.hiden", {"unknown key 'model.hiden'", "did you mean 'hidden'"});
  expect_override_error(ok, {"modle.hidden=3"}, "modle.hidden", {"unknown key 'modle.hidden'", "run, model"});
  expect_override_error(ok, {"model.router.topk=3"}, "model.router.topk", {"score, bias_update_rate"});
  expect_override_error(ok, {"model=3"}, "model", {"is a section", "vocab_size, hidden"});
  expect_override_error(ok, {"model.layers=four"}, "model.layers", {"model.layers is 'four'", "expected an integer"});
  expect_override_error(ok, {"train.lr=[1"}, "train.lr", {"malformed value '[1'"});
  expect_override_error(ok, {"model.router.score=relu"}, "model.router.score", {"sigmoid | softmax"});
  // A combination that an override breaks blames the override, even against a later file line.
  expect_override_error("model:\n  routed_experts: 4\n  experts_per_token: 2\n", {"model.routed_experts=1"},
                        "model.routed_experts", {"experts_per_token <= routed_experts"});
  std::string msg = error_of(ok, {"model.layers"});
  EXPECT_EQ(msg.rfind("--set model.layers: malformed override", 0), 0u) << msg;
  EXPECT_NE(msg.find("key=value"), std::string::npos) << msg;
}

TEST_F(ConfigTest, CheckpointMilestonesAndResumeNone) {
  moe::Config c = moe::parse_config("checkpoint: {every: 100, keep_last: 2, keep_every: 1000, resume: none}\n", "x");
  EXPECT_EQ(c.checkpoint.keep_every, 1000);
  EXPECT_EQ(c.checkpoint.resume, "none");  // the trainer reads it as never
  EXPECT_EQ(moe::Config().checkpoint.keep_every, 0);  // default: no milestones
  std::string yaml = moe::config_to_yaml(c);
  EXPECT_NE(yaml.find("keep_every: 1000"), std::string::npos) << yaml;
  EXPECT_EQ(moe::parse_config(yaml, "x"), c);
  expect_error_at("checkpoint:\n  keep_every: -5\n", 2, {"checkpoint.keep_every", ">= 0"});
  expect_error_at("checkpoint:\n  keep_every: 2.5\n", 2, {"checkpoint.keep_every", "expected an integer"});
  expect_override_error("run: {name: x}\n", {"checkpoint.keep_evry=3"}, "checkpoint.keep_evry",
                        {"did you mean 'keep_every'"});
}

// data.mix and data.document_mask: a list of {path, weight} that round-trips, and its bad inputs
// named by entry and line.
TEST_F(ConfigTest, DataMixAndDocumentMask) {
  moe::Config c = moe::parse_config(
      "data:\n  mix:\n    - {path: data/a, weight: 0.7}\n    - path: \"data/b c\"\n      weight: 3e-1\n"
      "  document_mask: true\n",
      "mix.yaml");
  ASSERT_EQ(c.data.mix.size(), 2u);
  EXPECT_EQ(c.data.mix[1].path, "data/b c");
  EXPECT_EQ(c.data.mix[1].weight, 0.3);
  EXPECT_TRUE(c.data.document_mask);
  std::string yaml = moe::config_to_yaml(c);
  moe::Config back = moe::parse_config(yaml, "mix.yaml");
  EXPECT_EQ(back, c) << yaml;
  EXPECT_NE(yaml.find("mix: [{path: \"data/a\", weight: 0.7}, {path: \"data/b c\", weight: 0.3}]"), std::string::npos) << yaml;
  EXPECT_TRUE(moe::parse_config(moe::config_to_yaml(moe::Config()), "x").data.mix.empty());
  EXPECT_EQ(moe::parse_config("run:\n  name: x\n", "x", {"data.mix=[{path: p, weight: 2}]"}).data.mix.size(), 1u);

  expect_error_at("data:\n  mix:\n    - {path: a, weight: 0}\n", 2, {"data.mix[0].weight is 0 for a", "> 0"});
  expect_error_at("data:\n  mix:\n    - {path: a, weight: 1}\n    - {path: b, weight: -2}\n", 2,
                  {"data.mix[1].weight is -2 for b", "> 0"});
  expect_error_at("data:\n  mix:\n    - {path: a, weight: x}\n", 2, {"data.mix[0].weight is 'x'", "finite number"});
  expect_error_at("data:\n  mix:\n    - {weight: 1}\n", 2, {"data.mix[0].path is missing", "preprocessed folder"});
  expect_error_at("data:\n  mix:\n    - {path: a, wieght: 1}\n", 2, {"data.mix[0] has unknown key 'wieght'"});
  expect_error_at("data:\n  mix: data/a\n", 2, {"data.mix is a value", "list of {path: DIR, weight: W}"});
  expect_error_at("data:\n  path: x\n  mix:\n    - {path: a, weight: 1}\n", 3,
                  {"data.path and data.mix are both set"});
  expect_error_at("data:\n  document_mask: maybe\n", 2, {"data.document_mask is 'maybe'", "true or false"});
}

TEST_F(ConfigTest, MultiTokenPrediction) {
  moe::Config c = moe::parse_config(
      "model: {layers: 2, dense_layers: 3, mtp_depth: 2, mtp_loss_weight: 0.3, mtp_loss_weight_step: 100, "
      "mtp_loss_weight_final: 0.1}\ndata: {seq_len: 8}\n", "x");
  EXPECT_EQ(c.model.mtp_depth, 2);
  EXPECT_EQ(moe::mtp_loss_weight_at(c.model, 99), 0.3);
  EXPECT_EQ(moe::mtp_loss_weight_at(c.model, 100), 0.1);
  c.model.mtp_loss_weight_step = 0;  // never lowered
  EXPECT_EQ(moe::mtp_loss_weight_at(c.model, 1000000), 0.3);
  EXPECT_EQ(moe::parse_config(moe::config_to_yaml(c), "x"), c);
  const std::string ok = "model: {layers: 2, mtp_depth: 2}\ndata: {seq_len: 8}\n";
  expect_override_error(ok, {"data.seq_len=2"}, "data.seq_len", {"model.mtp_depth is 2 but data.seq_len is 2", "seq_len > mtp_depth"});
  expect_override_error(ok, {"model.dense_layers=5"}, "model.dense_layers",
                        {"model.layers + model.mtp_depth is 4", "dense_layers <= layers + mtp_depth"});
  expect_override_error(ok, {"model.mtp_loss_weight=-1"}, "model.mtp_loss_weight", {">= 0"});
}
