#include "checkpoints/hf_export.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "checkpoints/layout.h"
#include "checkpoints/safetensors.h"
#include "framework/dtype.h"
#include "framework/error.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

bool is_optimizer_state(const std::string& name) { return name.rfind("optimizer.", 0) == 0; }

// The router bias only steers expert choice by small steps (bias_update_rate); bf16 would erase them.
bool stays_f32(const std::string& name) {
  const std::string suffix = ".e_score_correction_bias";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Tensor to_bf16(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::BF16);
  const float* src = t.f32();
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) dst[i] = f32_to_bf16_bits(src[i]);
  return out;
}

}  // namespace

nlohmann::ordered_json hf_config(const Config& cfg, DType dtype) {
  MOE_CHECK(dtype == DType::F32 || dtype == DType::BF16, "export dtype ", dtype_name(dtype));
  const ModelConfig& m = cfg.model;
  return {
      {"architectures", nlohmann::ordered_json::array({"DeepseekV3ForCausalLM"})},
      {"model_type", "deepseek_v3"},
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.hidden},
      {"intermediate_size", m.dense_inter},
      {"moe_intermediate_size", m.expert_inter},
      {"num_hidden_layers", m.layers},
      {"num_attention_heads", m.heads},
      {"num_key_value_heads", m.heads},
      {"n_shared_experts", m.shared_experts},
      {"n_routed_experts", m.routed_experts},
      {"num_experts_per_tok", m.experts_per_token},
      {"n_group", m.router.groups},
      {"topk_group", m.router.groups_per_token},
      {"routed_scaling_factor", m.router.routed_scaling},
      {"norm_topk_prob", true},
      {"scoring_func", m.router.score},
      {"topk_method", "noaux_tc"},
      {"first_k_dense_replace", m.dense_layers},
      {"moe_layer_freq", 1},
      {"num_nextn_predict_layers", m.mtp_depth},
      // 0 means "no q compression" here and null (a plain q_proj) in transformers.
      {"q_lora_rank", m.q_lora_rank > 0 ? nlohmann::ordered_json(m.q_lora_rank) : nlohmann::ordered_json(nullptr)},
      {"kv_lora_rank", m.kv_lora_rank},
      {"qk_nope_head_dim", m.qk_nope_dim},
      {"qk_rope_head_dim", m.qk_rope_dim},
      {"v_head_dim", m.v_head_dim},
      {"qk_head_dim", qk_head_dim(m)},
      {"head_dim", m.qk_rope_dim},  // what DeepseekV3Config sets: the rotary dimension
      {"hidden_act", "silu"},
      {"max_position_embeddings", cfg.data.seq_len},
      {"rms_norm_eps", m.rms_norm_eps},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", nullptr},
      {"rope_interleave", true},  // q_pe / k_pe pairs are interleaved, as in DeepSeek's own weights
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", m.init_std},
      {"tie_word_embeddings", m.tie_embeddings},
      {"use_cache", true},
      {"torch_dtype", dtype == DType::BF16 ? "bfloat16" : "float32"},
  };
}

ExportSummary export_hf(const CheckpointReader& ckpt, const std::string& out_dir, DType dtype) {
  MOE_CHECK(dtype == DType::F32 || dtype == DType::BF16, "export dtype ", dtype_name(dtype));
  Config cfg = parse_config(ckpt.config_yaml(), ckpt.dir() + "/" + ckpt::kConfig);
  // (exported name, checkpoint dataset): every parameter as itself, plus what DeepSeek-V3's release
  // stores in each MTP module (layer L+k-1) that our modules share with the main model: copies of
  // the embedding and of the output head (shared_head.head).
  std::vector<std::pair<std::string, std::string>> names;
  for (const std::string& n : ckpt.names())
    if (!is_optimizer_state(n)) names.emplace_back(n, n);
  if (names.empty()) throw error(ckpt.dir(), ": no model parameters to export");
  const ModelConfig& m = cfg.model;
  for (int k = 1; k <= m.mtp_depth; ++k) {
    const std::string p = "model.layers." + std::to_string(m.layers + k - 1);
    names.emplace_back(p + ".embed_tokens.weight", "model.embed_tokens.weight");
    names.emplace_back(p + ".shared_head.head.weight", m.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  }
  std::sort(names.begin(), names.end());

  ExportSummary sum;
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [out, n] : names) {
    if (ckpt.dtype(n) != DType::F32)
      throw error(ckpt.dir(), "/state.h5: dataset '", n, "' is ", dtype_name(ckpt.dtype(n)),
                  " (expected f32 master weights to export)");
    entries.push_back({out, ckpt.shape(n), stays_f32(n) ? DType::F32 : dtype});
    sum.parameters += shape_numel(entries.back().shape);
  }
  sum.tensors = int64_t(entries.size());

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw error(out_dir, ": cannot create folder (", ec.message(), ")");
  // Nothing run-specific (paths, times): the same weights always export to the same bytes.
  nlohmann::json meta = {{"format", "pt"}, {"step", std::to_string(ckpt.step())}};
  SafetensorsWriter w(out_dir + "/model.safetensors", entries, meta);
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    Tensor t = ckpt.read(names[i].second);
    w.write(e.dtype == DType::BF16 ? to_bf16(t) : t);
  }
  sum.bytes = w.finish();

  std::string config_path = out_dir + "/config.json", tmp = config_path + ".tmp";
  ckpt::write_file_synced(tmp, hf_config(cfg, dtype).dump(2) + "\n");
  if (std::rename(tmp.c_str(), config_path.c_str()) != 0)
    throw error(tmp, ": cannot rename to ", config_path, " (", strerror(errno), ")");
  return sum;
}

}  // namespace moe
