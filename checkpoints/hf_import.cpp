#include "checkpoints/hf_import.h"

#include <limits>

#include "framework/error.h"

namespace moe {

namespace {

// Typed reads of config.json keys; each failure names the file, the key and what was expected.
class HfKeys {
 public:
  HfKeys(const nlohmann::json& j, const std::string& source) : j_(j), source_(source) {}

  const nlohmann::json& at(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) throw error(source_, ": missing key \"", key, "\" (expected a DeepseekV3 config.json)");
    return *it;
  }
  [[noreturn]] void wrong(const char* key, const char* expected) const {
    throw error(source_, ": \"", key, "\" is ", at(key).dump(), " (expected ", expected, ")");
  }
  int integer(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < std::numeric_limits<int>::min() ||
        v.get<int64_t>() > std::numeric_limits<int>::max())
      wrong(key, "an integer");
    return v.get<int>();
  }
  double number(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_number()) wrong(key, "a number");
    return v.get<double>();
  }
  bool boolean(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_boolean()) wrong(key, "true or false");
    return v.get<bool>();
  }
  std::string string(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_string()) wrong(key, "a string");
    return v.get<std::string>();
  }
  // A key whose value this code fixes (when present: transformers fills in defaults).
  void fixed(const char* key, const nlohmann::json& value, const char* expected) const {
    if (j_.contains(key) && j_[key] != value) wrong(key, expected);
  }

 private:
  const nlohmann::json& j_;
  const std::string& source_;
};

}  // namespace

Config config_from_hf(const nlohmann::json& hf, const std::string& source) {
  if (!hf.is_object()) throw error(source, ": a JSON ", hf.type_name(), " (expected a DeepseekV3 config object)");
  HfKeys k(hf, source);
  if (k.string("model_type") != "deepseek_v3") k.wrong("model_type", "\"deepseek_v3\"");
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = k.integer("vocab_size");
  m.hidden = k.integer("hidden_size");
  m.dense_inter = k.integer("intermediate_size");
  m.expert_inter = k.integer("moe_intermediate_size");
  m.layers = k.integer("num_hidden_layers");
  m.heads = k.integer("num_attention_heads");
  m.shared_experts = k.integer("n_shared_experts");
  m.routed_experts = k.integer("n_routed_experts");
  m.experts_per_token = k.integer("num_experts_per_tok");
  m.router.groups = k.integer("n_group");
  m.router.groups_per_token = k.integer("topk_group");
  m.router.routed_scaling = k.number("routed_scaling_factor");
  m.router.score = k.string("scoring_func");
  m.dense_layers = k.integer("first_k_dense_replace");
  m.mtp_depth = hf.contains("num_nextn_predict_layers") ? k.integer("num_nextn_predict_layers") : 0;
  m.q_lora_rank = k.at("q_lora_rank").is_null() ? 0 : k.integer("q_lora_rank");
  if (m.q_lora_rank == 0 && !k.at("q_lora_rank").is_null()) k.wrong("q_lora_rank", "null or a positive integer");
  m.kv_lora_rank = k.integer("kv_lora_rank");
  m.qk_nope_dim = k.integer("qk_nope_head_dim");
  m.qk_rope_dim = k.integer("qk_rope_head_dim");
  m.v_head_dim = k.integer("v_head_dim");
  m.rms_norm_eps = k.number("rms_norm_eps");
  m.rope_theta = k.number("rope_theta");
  m.init_std = hf.contains("initializer_range") ? k.number("initializer_range") : m.init_std;
  m.tie_embeddings = k.boolean("tie_word_embeddings");
  c.data.seq_len = k.integer("max_position_embeddings");

  // What hf_config() fixes: another value describes a model this code does not build.
  if (k.integer("num_key_value_heads") != m.heads) k.wrong("num_key_value_heads", "num_attention_heads (MLA)");
  if (hf.contains("qk_head_dim") && k.integer("qk_head_dim") != m.qk_nope_dim + m.qk_rope_dim)
    k.wrong("qk_head_dim", "qk_nope_head_dim + qk_rope_head_dim");
  k.fixed("hidden_act", "silu", "\"silu\"");
  k.fixed("norm_topk_prob", true, "true");
  k.fixed("topk_method", "noaux_tc", "\"noaux_tc\"");
  k.fixed("moe_layer_freq", 1, "1: every block after first_k_dense_replace is an MoE block");
  k.fixed("rope_scaling", nullptr, "null: RoPE scaling is not implemented");
  k.fixed("rope_interleave", true, "true: this code's RoPE rotates interleaved pairs");
  k.fixed("attention_bias", false, "false");

  // Our validation rules; its messages name our keys (model.*), so they are re-worded for the file.
  const std::string tag = "<config.json>";
  try {
    return [&] {
      Config v = parse_config(config_to_yaml(c), tag);
      v.source = source;
      return v;
    }();
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind(tag, 0) == 0) {
      size_t colon = msg.find(": ");
      msg = colon == std::string::npos ? msg : msg.substr(colon + 2);
    }
    throw error(source, ": not a model this build can run: ", msg, " (in our config's names)");
  }
}

}  // namespace moe
