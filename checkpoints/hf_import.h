// The inverse of hf_config() (hf_export.h): a DeepseekV3Config (config.json) back into our Config,
// for loading an export directly. Only what this code builds is accepted: model_type deepseek_v3,
// every key hf_config() writes with its JSON type, and the architecture choices it fixes (silu,
// noaux_tc routing with normalised top-k, one MoE layer per block after the dense ones, as many KV
// heads as heads, interleaved RoPE without scaling, no attention bias). Anything else is a
// moe::Error naming the file and the key.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "framework/config.h"

namespace moe {

// model.* and data.seq_len (max_position_embeddings) from `hf`; the other sections keep their
// defaults. The result is validated like a YAML config; `source` names the file in errors.
Config config_from_hf(const nlohmann::json& hf, const std::string& source);

}  // namespace moe
