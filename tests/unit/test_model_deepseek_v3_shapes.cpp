// configs/deepseek-v3-671b.yaml is DeepSeek-V3: the model built from it at full width (its
// parameter registry: names and shapes, without storage, since 671B parameters do not fit here)
// has Hugging Face DeepseekV3's tensor names and shapes, count_params agrees with it, and the
// counts match the report: 671B total for the main model, 37B active per token, and a 14B MTP
// module (the Hugging Face checkpoint's 685B). count_params counts trainable parameters: not the
// routers' e_score_correction_bias buffers (256 per MoE layer).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "framework/config.h"
#include "model/model.h"

namespace moe {
namespace {

Config v3_config() {
  const char* src = std::getenv("MOE_SOURCE_DIR");
  return load_config(std::string(src ? src : ".") + "/configs/deepseek-v3-671b.yaml");
}

// The parameters a model of config c registers, by name: shapes only (no storage is allocated).
std::map<std::string, ParamInfo> registry(const ModelConfig& c) {
  DeepSeekV3 model(c, ModelPlacement{1, 0, /*own_storage=*/false});
  std::map<std::string, ParamInfo> out;
  for (const ParamInfo& p : model.params().infos()) out[p.name] = p;
  return out;
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

int64_t trainable_numel(const std::map<std::string, ParamInfo>& reg) {
  int64_t n = 0;
  for (const auto& [name, p] : reg)
    if (p.trainable) n += numel(p.shape);
  return n;
}

TEST(DeepSeekV3Shapes, FullWidthLayersHaveTheHuggingFaceShapes) {
  ModelConfig c = v3_config().model;
  c.layers = 4;  // 3 dense blocks and one MoE block, then the MTP module as layer 4
  const std::map<std::string, ParamInfo> reg = registry(c);
  const std::map<std::string, Shape> expected = {
      {"model.embed_tokens.weight", {129280, 7168}},
      {"lm_head.weight", {129280, 7168}},
      {"model.norm.weight", {7168}},
      {"model.layers.0.self_attn.q_a_proj.weight", {1536, 7168}},
      {"model.layers.0.self_attn.q_a_layernorm.weight", {1536}},
      {"model.layers.0.self_attn.q_b_proj.weight", {128 * 192, 1536}},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {512 + 64, 7168}},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", {512}},
      {"model.layers.0.self_attn.kv_b_proj.weight", {128 * 256, 512}},
      {"model.layers.0.self_attn.o_proj.weight", {7168, 128 * 128}},
      {"model.layers.2.mlp.gate_proj.weight", {18432, 7168}},
      {"model.layers.2.mlp.down_proj.weight", {7168, 18432}},
      {"model.layers.3.mlp.gate.weight", {256, 7168}},
      {"model.layers.3.mlp.gate.e_score_correction_bias", {256}},
      {"model.layers.3.mlp.shared_experts.up_proj.weight", {2048, 7168}},
      {"model.layers.3.mlp.experts.255.down_proj.weight", {7168, 2048}},
      {"model.layers.4.eh_proj.weight", {7168, 2 * 7168}},
      {"model.layers.4.enorm.weight", {7168}},
      {"model.layers.4.hnorm.weight", {7168}},
      {"model.layers.4.mlp.experts.0.gate_proj.weight", {2048, 7168}},
  };
  for (const auto& [name, shape] : expected) {
    auto it = reg.find(name);
    ASSERT_NE(it, reg.end()) << name;
    EXPECT_EQ(it->second.shape, shape) << name;
  }
  // The analytic count (used for logs, MFU and `moe plan`) against the registry, at full width.
  EXPECT_EQ(count_params(c).total, trainable_numel(reg));
  EXPECT_FALSE(reg.at("model.layers.3.mlp.gate.e_score_correction_bias").trainable);
}

TEST(DeepSeekV3Shapes, CountsMatchTheReport) {
  ModelConfig c = v3_config().model;
  const ParamCounts with_mtp = count_params(c);
  c.mtp_depth = 0;
  const ParamCounts main = count_params(c);
  // The MTP module shares the embedding and the output head with the main model (report, 2.2);
  // the Hugging Face checkpoint stores a copy of each in it (layer 61's embed_tokens and
  // shared_head.head), and that is how its 14B and 685B are counted.
  const int64_t own_mtp = with_mtp.total - main.total;
  const int64_t hf_mtp = own_mtp + 2 * int64_t(c.vocab_size) * c.hidden;
  printf("DeepSeek-V3: main model %.2fB total, %.2fB active per token; MTP module %.2fB of its own, %.2fB as "
         "Hugging Face stores it; %.2fB in the Hugging Face checkpoint\n",
         main.total / 1e9, main.active / 1e9, own_mtp / 1e9, hf_mtp / 1e9, (main.total + hf_mtp) / 1e9);
  // The report's figures are rounded to the billion: 671B, 37B, 14B; Hugging Face: 685B in all.
  EXPECT_NEAR(main.total / 1e9, 671, 1.0);
  EXPECT_NEAR(main.active / 1e9, 37, 1.0);
  EXPECT_NEAR(hf_mtp / 1e9, 14, 1.0);
  EXPECT_NEAR((main.total + hf_mtp) / 1e9, 685, 1.0);
  // The whole 61-layer model's registry, without storage, agrees with the count.
  const std::map<std::string, ParamInfo> reg = registry(v3_config().model);
  EXPECT_EQ(with_mtp.total, trainable_numel(reg));
  EXPECT_EQ(reg.count("model.layers.61.eh_proj.weight"), 1u);
  EXPECT_EQ(reg.count("model.layers.62.eh_proj.weight"), 0u);
}

}  // namespace
}  // namespace moe
