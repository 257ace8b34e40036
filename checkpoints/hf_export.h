// Export of a checkpoint's model to a Hugging Face folder (docs/checkpoints.md, "Export"):
//   model.safetensors   every parameter under its (already Hugging Face) name, sorted by name; no
//                       optimizer state. Weights in the chosen dtype (bf16 rounds to nearest even);
//                       the routers' e_score_correction_bias stays f32, as DeepSeek-V3 keeps it.
//   config.json         DeepseekV3Config (transformers' model_type "deepseek_v3")
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "framework/config.h"

namespace moe {

// DeepseekV3Config fields for a model trained with `cfg`; torch_dtype names `dtype` (f32 or bf16).
nlohmann::ordered_json hf_config(const Config& cfg, DType dtype);

struct ExportSummary {
  int64_t tensors = 0, parameters = 0, bytes = 0;  // bytes: size of model.safetensors
};

// Writes out_dir/model.safetensors and out_dir/config.json (creating out_dir; files already there
// are replaced, each by an atomic rename). dtype is F32 or BF16; the checkpoint must hold f32.
ExportSummary export_hf(const CheckpointReader& ckpt, const std::string& out_dir, DType dtype);

}  // namespace moe
