// launch/model_source.h: a real model saved as a checkpoint and exported as f32, bf16 and int8
// loads back from either (f32 bitwise, bf16 its rounding, int8 within half a step of each row's
// scale), with the config, tokenizer, step and val loss recorded; exports missing a tensor, with a
// misshapen or left-over tensor, or without config.json fail with a message naming the file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_export.h"
#include "checkpoints/safetensors.h"
#include "framework/dtype.h"
#include "framework/error.h"
#include "launch/model_io.h"
#include "launch/model_source.h"

namespace moe {
namespace {
namespace fs = std::filesystem;

Config small_config() {
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = 40; m.hidden = 32; m.layers = 2; m.dense_layers = 1; m.dense_inter = 48;
  m.heads = 2; m.q_lora_rank = 24; m.kv_lora_rank = 16; m.qk_nope_dim = 8; m.qk_rope_dim = 8; m.v_head_dim = 12;
  m.shared_experts = 1; m.routed_experts = 4; m.experts_per_token = 2; m.expert_inter = 16;
  c.data.seq_len = 24;
  return c;
}

template <class Fn>
void expect_error(Fn&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected moe::Error containing: " << part;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what();
  }
}

class ModelSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moe-source-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cfg_ = small_config();
    model_ = std::make_unique<DeepSeekV3>(cfg_.model);
    model_->params().initialize(5);
    ckpt_ = save_checkpoint(dir_ + "/ckpt", 30, checkpoint_tensors(*model_, nullptr), config_to_yaml(cfg_),
                            {{"tokenizer", "byte"}, {"tokenizer_hash", "h"}, {"val_loss", 3.25}, {"val_loss_step", 30}},
                            0);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string exported(const std::string& dtype) {
    const std::string out = dir_ + "/" + dtype;
    if (!fs::exists(out)) export_hf(CheckpointReader(ckpt_), out, dtype);
    return out;
  }
  std::string dir_, ckpt_;
  Config cfg_;
  std::unique_ptr<DeepSeekV3> model_;
};

TEST_F(ModelSourceTest, CheckpointAndExportsLoadTheSameModel) {
  const ModelSource c = open_model_source(dir_ + "/ckpt");
  EXPECT_EQ(c.kind, "checkpoint");
  EXPECT_EQ(c.path, ckpt_);
  EXPECT_EQ(c.step, 30);
  EXPECT_EQ(c.val_loss, 3.25);
  const ParamStore& want = model_->params();
  for (const std::string dtype : {"f32", "bf16", "int8"}) {
    const ModelSource s = open_model_source(exported(dtype));
    EXPECT_EQ(s.kind, "export");
    EXPECT_EQ(s.dtype, dtype);
    EXPECT_EQ(s.config.model, c.config.model);
    EXPECT_EQ(s.config.data.seq_len, 24);
    EXPECT_EQ(s.tokenizer, "byte");
    EXPECT_EQ(s.tokenizer_hash, "h");
    EXPECT_EQ(s.step, 30);
    EXPECT_EQ(s.val_loss, 3.25);
    std::unique_ptr<DeepSeekV3> got = load_model(s);
    for (const ParamInfo& p : want.infos()) {
      const float* w = want.params() + p.offset;
      const float* g = got->params().params() + p.offset;
      const int64_t n = shape_numel(p.shape), cols = p.shape.size() == 2 ? p.shape[1] : n;
      const bool i8 = dtype == "int8" && int8_quantized(p.name, p.shape);
      for (int64_t r = 0; r < n / cols; ++r) {
        float amax = 0;
        for (int64_t k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(w[r * cols + k]));
        for (int64_t k = 0; k < cols; ++k) {
          const int64_t i = r * cols + k;
          if (i8) ASSERT_LE(std::fabs(g[i] - w[i]), amax / 127 * 0.5f * 1.0001f) << p.name << "[" << i << "]";
          else if (dtype == "bf16" && p.trainable) ASSERT_EQ(g[i], round_bf16(w[i])) << p.name;
          else ASSERT_EQ(g[i], w[i]) << dtype << " " << p.name;
        }
      }
    }
  }
}

TEST_F(ModelSourceTest, BadExportsAreErrorsNamingTheFile) {
  const std::string good = exported("f32");
  const SafetensorsReader st(good + "/model.safetensors");
  // Rewrites the export's tensors with `edit` applied to the list of entries.
  auto rewrite = [&](const std::string& name, auto edit) {
    const std::string out = dir_ + "/" + name;
    fs::create_directories(out);
    fs::copy_file(good + "/config.json", out + "/config.json");
    std::vector<SafetensorsWriter::Entry> entries;
    for (const auto& [n, info] : st.tensors()) entries.push_back({n, info.shape, info.dtype});
    edit(entries);
    SafetensorsWriter w(out + "/model.safetensors", entries, nullptr);
    for (const auto& e : entries) {
      std::vector<char> bytes(size_t(shape_numel(e.shape) * 4));
      w.write(bytes.data(), int64_t(bytes.size()));
    }
    w.finish();
    return out;
  };
  const std::string missing = rewrite("missing", [](auto& e) { e.erase(e.begin()); });
  expect_error([&] { load_model(open_model_source(missing)); },
               missing + "/model.safetensors: no tensor '" + st.tensors().begin()->first + "'");
  const std::string shape = rewrite("shape", [](auto& e) {
    for (auto& x : e) if (x.name == "model.norm.weight") x.shape = {31};
  });
  expect_error([&] { load_model(open_model_source(shape)); },
               "tensor 'model.norm.weight' has shape [31] (expected [32]");
  const std::string extra = rewrite("extra", [](auto& e) { e.push_back({"zz.weight", {2}, "F32"}); });
  expect_error([&] { load_model(open_model_source(extra)); }, "unexpected tensor 'zz.weight'");
  // A non-finite int8 scale (a corrupt file whose header is fine).
  const std::string bad_scale = dir_ + "/bad-scale";
  fs::copy(exported("int8"), bad_scale);
  {
    const std::string file = bad_scale + "/model.safetensors", name = "lm_head.weight_scale";
    const int64_t begin = SafetensorsReader(file).info(name).begin;
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    f.seekp(std::streamoff(8 + n + uint64_t(begin)));
    const float nan = std::nanf("");
    f.write(reinterpret_cast<const char*>(&nan), 4);
  }
  expect_error([&] { load_model(open_model_source(bad_scale)); },
               "tensor 'lm_head.weight_scale' holds nan (expected finite scales >= 0)");
  fs::remove(extra + "/config.json");
  expect_error([&] { open_model_source(extra); }, extra + ": model.safetensors without config.json");
  expect_error([&] { open_model_source(dir_ + "/none"); }, dir_ + "/none: no such checkpoint or export");
}

}  // namespace
}  // namespace moe
