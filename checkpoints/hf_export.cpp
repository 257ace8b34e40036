#include "checkpoints/hf_export.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "checkpoints/int8_weights.h"
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

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Tensor to_bf16(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::BF16);
  const float* src = t.f32();
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) dst[i] = f32_to_bf16_bits(src[i]);
  return out;
}

}  // namespace

bool int8_quantized(const std::string& name, const Shape& shape, bool embeddings) {
  if (shape.size() != 2 || !ends_with(name, ".weight")) return false;
  for (const std::string& kept : int8_modules_not_converted(embeddings))
    if (name == kept + ".weight" || (kept[0] == '*' && ends_with(name, kept.substr(1) + ".weight"))) return false;
  return true;
}

std::vector<std::string> int8_modules_not_converted(bool embeddings) {
  // lm_head is converted: on the demo model its int8 costs no measurable loss (docs/checkpoints.md,
  // "INT8 export"). The routers choose experts from small score differences; the norms are 1-D.
  std::vector<std::string> kept = {"*.mlp.gate", "*layernorm", "model.norm"};
  if (!embeddings) kept.insert(kept.begin(), "model.embed_tokens");
  return kept;
}

std::string int8_scale_name(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size()) + ".weight_scale";
}

nlohmann::ordered_json hf_config(const Config& cfg, const std::string& dtype) {
  MOE_CHECK(dtype == "f32" || dtype == "bf16" || dtype == "int8", "export dtype ", dtype);
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
      // int8 weights are de-quantised to f32 to compute: the unquantised tensors are f32 too.
      {"torch_dtype", dtype == "bf16" ? "bfloat16" : "float32"},
  };
}

namespace {

// The tokenizer the model was trained with, as the export records it: "byte" as is, a tokenizer
// file copied into the folder (tokenizer.json / tokenizer.model, the names Hugging Face uses) and
// recorded by that name, so the folder is self-contained.
std::string export_tokenizer(const std::string& spec, const std::string& ckpt_dir, const std::string& out_dir) {
  if (spec.empty() || spec == "byte") return spec;
  const std::string name = ends_with(spec, ".model") ? "tokenizer.model" : "tokenizer.json";
  std::error_code ec;
  fs::copy_file(spec, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
  if (ec)
    throw error(ckpt_dir, "/meta.json: tokenizer '", spec, "' cannot be copied into the export (", ec.message(),
                "; expected the tokenizer file the model was trained with)");
  return name;
}

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  const std::string tmp = path + ".tmp";
  ckpt::write_file_synced(tmp, j.dump(2) + "\n");
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw error(tmp, ": cannot rename to ", path, " (", strerror(errno), ")");
}

}  // namespace

ExportSummary export_hf(const CheckpointReader& ckpt, const std::string& out_dir, const std::string& dtype,
                        bool int8_embeddings) {
  MOE_CHECK(dtype == "f32" || dtype == "bf16" || dtype == "int8", "export dtype ", dtype);
  Config cfg = parse_config(ckpt.config_yaml(), ckpt.dir() + "/" + ckpt::kConfig);
  // (exported name, checkpoint dataset): every parameter as itself, plus what DeepSeek-V3's release
  // stores in each MTP module (layer L+k-1) that our modules share with the main model: copies of
  // the embedding and of the output head (shared_head.head).
  std::vector<std::pair<std::string, std::string>> names;
  for (const std::string& n : ckpt.names())
    if (!is_optimizer_state(n)) names.emplace_back(n, n);
  if (names.empty()) throw error(ckpt.dir(), ": no model parameters to export");
  const ModelConfig& mc = cfg.model;
  for (int k = 1; k <= mc.mtp_depth; ++k) {
    const std::string p = "model.layers." + std::to_string(mc.layers + k - 1);
    names.emplace_back(p + ".embed_tokens.weight", "model.embed_tokens.weight");
    names.emplace_back(p + ".shared_head.head.weight", mc.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  }
  std::map<std::string, std::string> source;  // exported name -> dataset (the copies differ)
  for (const auto& [out, n] : names) source[out] = n;

  ExportSummary sum;
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [out, n] : names) {
    if (ckpt.dtype(n) != DType::F32)
      throw error(ckpt.dir(), "/state.h5: dataset '", n, "' is ", dtype_name(ckpt.dtype(n)),
                  " (expected f32 master weights to export)");
    const Shape shape = ckpt.shape(n);
    sum.parameters += shape_numel(shape);
    if (dtype == "int8" && int8_quantized(n, shape, int8_embeddings)) {  // a copy as its original
      entries.push_back({out, shape, "I8"});
      entries.push_back({int8_scale_name(out), {shape[0]}, "F32"});
    } else {
      entries.push_back({out, shape, dtype == "bf16" && !stays_f32(n) ? "BF16" : "F32"});
    }
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  sum.tensors = int64_t(entries.size());

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw error(out_dir, ": cannot create folder (", ec.message(), ")");
  // Nothing run-specific (paths, times): the same weights always export to the same bytes.
  nlohmann::json meta = {{"format", "pt"}, {"step", std::to_string(ckpt.step())}};
  SafetensorsWriter w(out_dir + "/model.safetensors", entries, meta);
  // An int8 weight is written with its scale right after it (".weight" < ".weight_scale"), so
  // one quantisation serves both entries.
  Int8Rows pending;
  std::string pending_scale;
  for (const auto& e : entries) {
    if (e.dtype == "I8") {
      const std::string& n = source.at(e.name);
      pending = quantize_rows_int8(ckpt.read(n), ckpt.dir() + "/state.h5: dataset '" + n + "'");
      pending_scale = int8_scale_name(e.name);
      w.write(pending.q.data(), int64_t(pending.q.size()));
    } else if (e.name == pending_scale) {
      w.write(pending.scale.data(), int64_t(pending.scale.size() * sizeof(float)));
    } else {
      Tensor t = ckpt.read(source.at(e.name));
      w.write(e.dtype == "BF16" ? to_bf16(t) : t);
    }
  }
  sum.bytes = w.finish();

  nlohmann::ordered_json config = hf_config(cfg, dtype);
  if (dtype == "int8")
    config["quantization_config"] = {{"quant_method", kInt8QuantMethod},
                                     {"bits", 8},
                                     {"group", "per-output-row"},
                                     {"symmetric", true},
                                     {"scale_dtype", "float32"},
                                     {"scale_suffix", "weight_scale"},
                                     {"modules_not_converted", int8_modules_not_converted(int8_embeddings)}};
  // What generation needs beyond the model: the tokenizer, and what the model is (step, val loss).
  const nlohmann::json& m = ckpt.meta();
  nlohmann::ordered_json moe = {
      {"tokenizer", export_tokenizer(m.value("tokenizer", std::string("byte")), ckpt.dir(), out_dir)},
      {"tokenizer_hash", m.value("tokenizer_hash", std::string())},
      {"step", ckpt.step()}};
  if (m.contains("tokens")) moe["tokens"] = m["tokens"];
  if (m.contains("val_loss")) moe["val_loss"] = m["val_loss"];
  if (m.contains("val_loss_step")) moe["val_loss_step"] = m["val_loss_step"];
  config["moe"] = moe;
  write_json(out_dir + "/config.json", config);
  return sum;
}

}  // namespace moe
