// Hugging Face export: model.safetensors parses by the format's rules (8-byte little-endian header
// length, JSON header, contiguous data in name order), holds every parameter and no optimizer
// state, f32 values bitwise equal to the checkpoint and bf16 values rounded to nearest even; the
// router bias stays f32; config.json carries the DeepseekV3Config fields.
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "checkpoints/hf_export.h"
#include "framework/config.h"
#include "framework/dtype.h"
#include "test_ckpt_util.h"

namespace moe {
namespace {

using test::expect_error;
using test::ramp;

struct Safetensors {
  uint64_t header_len = 0;
  nlohmann::json header;
  std::string data;
};

Safetensors parse(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  Safetensors st;
  EXPECT_GE(bytes.size(), 8u);
  for (int i = 0; i < 8; ++i) st.header_len |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  st.header = nlohmann::json::parse(bytes.substr(8, st.header_len));
  st.data = bytes.substr(8 + st.header_len);
  return st;
}

// The bytes of tensor `name`, after checking its entry.
std::string tensor_bytes(const Safetensors& st, const std::string& name, const char* dtype, const Shape& shape) {
  const nlohmann::json& e = st.header.at(name);
  EXPECT_EQ(e["dtype"], dtype) << name;
  EXPECT_EQ(e["shape"].get<Shape>(), shape) << name;
  uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
  EXPECT_EQ(end - b, uint64_t(shape_numel(shape) * (std::string(dtype) == "F32" ? 4 : 2))) << name;
  return st.data.substr(b, end - b);
}

class CkptExport : public test::TempDir {
 protected:
  void SetUp() override {
    TempDir::SetUp();
    cfg_.model.q_lora_rank = 0;
    cfg_.model.router.groups = 2;
    cfg_.model.router.groups_per_token = 1;
    cfg_.data.seq_len = 128;
    Tensor special = Tensor::empty({6});
    const float values[6] = {1.00390625f,  // halfway between bf16 1.0 and 1.0078125: to even, 1.0
                             1.01171875f,  // halfway between 1.0078125 and 1.015625: to even, 1.015625
                             -3.3f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 0.f};
    for (int i = 0; i < 6; ++i) special.f32()[i] = values[i];
    tensors_ = {{"model.embed_tokens.weight", ramp({8, 4}, 0.25f)},
                {"model.layers.1.mlp.gate.e_score_correction_bias", ramp({4}, 1e-3f)},
                {"model.norm.weight", special},
                {"lm_head.weight", ramp({8, 4}, -0.5f)},
                {"optimizer.exp_avg.model.norm.weight", ramp({6}, 9.f)},
                {"optimizer.exp_avg_sq.model.norm.weight", ramp({6}, 8.f)}};
    dir_ckpt_ = save_checkpoint(path("ckpt"), 12, tensors_, config_to_yaml(cfg_), nullptr, 0);
  }
  Config cfg_;
  std::vector<NamedTensor> tensors_;
  std::string dir_ckpt_;
};

TEST_F(CkptExport, F32IsBitwiseAndHasNoOptimizerState) {
  CheckpointReader ckpt(dir_ckpt_);
  ExportSummary s = export_hf(ckpt, path("hf"), "f32");
  EXPECT_EQ(s.tensors, 4);
  EXPECT_EQ(s.parameters, 32 + 4 + 6 + 32);
  Safetensors st = parse(path("hf/model.safetensors"));
  EXPECT_EQ(st.header_len % 8, 0u);  // data starts 8-byte aligned
  EXPECT_EQ(int64_t(8 + st.header_len + st.data.size()), s.bytes);
  EXPECT_EQ(st.header["__metadata__"]["format"], "pt");
  EXPECT_EQ(st.header["__metadata__"]["step"], "12");
  EXPECT_EQ(st.header.size(), 5u);  // 4 tensors + __metadata__

  // Tensors lie back to back in name order, covering the data exactly.
  const std::vector<std::string> sorted = {"lm_head.weight", "model.embed_tokens.weight",
                                           "model.layers.1.mlp.gate.e_score_correction_bias", "model.norm.weight"};
  uint64_t at = 0;
  for (const std::string& n : sorted) {
    EXPECT_EQ(st.header[n]["data_offsets"][0].get<uint64_t>(), at) << n;
    at = st.header[n]["data_offsets"][1];
  }
  EXPECT_EQ(at, st.data.size());
  for (const NamedTensor& nt : tensors_) {
    if (nt.name.rfind("optimizer.", 0) == 0) {
      EXPECT_FALSE(st.header.contains(nt.name));
      continue;
    }
    std::string b = tensor_bytes(st, nt.name, "F32", nt.tensor.shape());
    EXPECT_EQ(b, std::string(static_cast<const char*>(nt.tensor.raw()), size_t(nt.tensor.nbytes()))) << nt.name;
  }
}

TEST_F(CkptExport, Bf16RoundsToNearestEvenAndKeepsTheRouterBiasF32) {
  CheckpointReader ckpt(dir_ckpt_);
  export_hf(ckpt, path("hf"), "bf16");
  Safetensors st = parse(path("hf/model.safetensors"));
  std::string norm = tensor_bytes(st, "model.norm.weight", "BF16", {6});
  std::vector<uint16_t> bits(6);
  std::memcpy(bits.data(), norm.data(), 12);
  EXPECT_EQ(bf16_bits_to_f32(bits[0]), 1.0f);
  EXPECT_EQ(bf16_bits_to_f32(bits[1]), 1.015625f);
  EXPECT_TRUE(std::isinf(bf16_bits_to_f32(bits[3])));
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(bits[4])));
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}) {
    Tensor f = ckpt.read(name);
    std::string b = tensor_bytes(st, name, "BF16", f.shape());
    for (int64_t i = 0; i < f.numel(); ++i) {
      uint16_t got;
      std::memcpy(&got, b.data() + 2 * i, 2);
      EXPECT_EQ(got, f32_to_bf16_bits(f.f32()[i])) << name << "[" << i << "]";
    }
  }
  Tensor bias = ckpt.read("model.layers.1.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(tensor_bytes(st, "model.layers.1.mlp.gate.e_score_correction_bias", "F32", {4}),
            std::string(static_cast<const char*>(bias.raw()), 16));
}

// MTP modules export under DeepSeek-V3's release names: their own tensors as they are, and in
// each module (layer L+k-1) copies of the shared embedding and output head.
TEST_F(CkptExport, MtpModulesGetCopiesOfTheSharedEmbeddingAndHead) {
  for (bool tie : {false, true}) {
    Config c = cfg_;
    c.model.mtp_depth = 2;
    c.model.tie_embeddings = tie;
    std::vector<NamedTensor> t = {{"model.embed_tokens.weight", ramp({8, 4}, 0.25f)},
                                  {"model.layers.4.eh_proj.weight", ramp({4, 8}, 2.f)},
                                  {"model.layers.5.enorm.weight", ramp({4}, 3.f)}};
    if (!tie) t.push_back({"lm_head.weight", ramp({8, 4}, -0.5f)});
    const std::string out = path(tie ? "hf_tied" : "hf");
    CheckpointReader ckpt(save_checkpoint(path(tie ? "ckpt_mtp_tied" : "ckpt_mtp"), 3, t, config_to_yaml(c), nullptr, 0));
    ExportSummary s = export_hf(ckpt, out, "f32");
    EXPECT_EQ(s.tensors, int64_t(t.size()) + 4);
    Safetensors st = parse(out + "/model.safetensors");
    const Tensor& head = tie ? t[0].tensor : t[3].tensor;
    auto bytes = [](const Tensor& x) { return std::string(static_cast<const char*>(x.raw()), size_t(x.nbytes())); };
    for (const char* layer : {"model.layers.4", "model.layers.5"}) {
      EXPECT_EQ(tensor_bytes(st, std::string(layer) + ".embed_tokens.weight", "F32", {8, 4}), bytes(t[0].tensor));
      EXPECT_EQ(tensor_bytes(st, std::string(layer) + ".shared_head.head.weight", "F32", {8, 4}), bytes(head));
    }
    EXPECT_EQ(tensor_bytes(st, "model.layers.4.eh_proj.weight", "F32", {4, 8}), bytes(t[1].tensor));
    std::ifstream in(out + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j["num_nextn_predict_layers"], 2);
    EXPECT_EQ(j["num_hidden_layers"], 4);
  }
}

TEST_F(CkptExport, ConfigJsonHasDeepseekV3Fields) {
  CheckpointReader ckpt(dir_ckpt_);
  export_hf(ckpt, path("hf"), "bf16");
  std::ifstream in(path("hf/config.json"));
  nlohmann::json c = nlohmann::json::parse(in);
  const ModelConfig& m = cfg_.model;
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(c["model_type"], "deepseek_v3");
  EXPECT_EQ(c["hidden_size"], m.hidden);
  EXPECT_EQ(c["intermediate_size"], m.dense_inter);
  EXPECT_EQ(c["moe_intermediate_size"], m.expert_inter);
  EXPECT_EQ(c["num_hidden_layers"], m.layers);
  EXPECT_EQ(c["num_attention_heads"], m.heads);
  EXPECT_EQ(c["num_key_value_heads"], m.heads);
  EXPECT_EQ(c["n_routed_experts"], m.routed_experts);
  EXPECT_EQ(c["n_shared_experts"], m.shared_experts);
  EXPECT_EQ(c["num_experts_per_tok"], m.experts_per_token);
  EXPECT_EQ(c["n_group"], 2);
  EXPECT_EQ(c["topk_group"], 1);
  EXPECT_EQ(c["first_k_dense_replace"], m.dense_layers);
  EXPECT_TRUE(c["q_lora_rank"].is_null());  // 0 here, None (a plain q_proj) in transformers
  EXPECT_EQ(c["kv_lora_rank"], m.kv_lora_rank);
  EXPECT_EQ(c["qk_head_dim"], m.qk_nope_dim + m.qk_rope_dim);
  EXPECT_EQ(c["head_dim"], m.qk_rope_dim);
  EXPECT_EQ(c["max_position_embeddings"], 128);
  EXPECT_EQ(c["rope_interleave"], true);
  EXPECT_EQ(c["norm_topk_prob"], true);
  EXPECT_EQ(c["scoring_func"], "sigmoid");
  EXPECT_EQ(c["topk_method"], "noaux_tc");
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  EXPECT_EQ(c["rms_norm_eps"], m.rms_norm_eps);
}

TEST_F(CkptExport, NonF32CheckpointIsAnError) {
  Tensor bf = Tensor::empty({2}, DType::BF16);
  bf.data<uint16_t>()[0] = bf.data<uint16_t>()[1] = 0;
  std::string dir = save_checkpoint(path("bf"), 1, {{"w", bf}}, config_to_yaml(cfg_), nullptr, 0);
  CheckpointReader ckpt(dir);
  expect_error([&] { export_hf(ckpt, path("out"), "bf16"); }, "dataset 'w' is bf16 (expected f32 master weights");
}

}  // namespace
}  // namespace moe
