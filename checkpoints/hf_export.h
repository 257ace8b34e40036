// Export of a checkpoint's model to a Hugging Face folder (docs/checkpoints.md, "Export"):
//   model.safetensors   every parameter under its (already Hugging Face) name, sorted by name; no
//                       optimizer state. Weights in the chosen dtype (bf16 rounds to nearest even);
//                       the routers' e_score_correction_bias stays f32, as DeepSeek-V3 keeps it.
//                       int8: every Linear weight "<m>.weight" [out, in] as I8 plus
//                       "<m>.weight_scale" F32 [out] (checkpoints/int8_weights.h), lm_head
//                       included; the embedding table (unless asked), norms and routers stay f32.
//   config.json         DeepseekV3Config (transformers' model_type "deepseek_v3"), with
//                       "quantization_config" for int8, and a "moe" block: tokenizer (copied into
//                       the folder when it is a file), tokenizer_hash, step, tokens, val_loss.
//   tokenizer.json / tokenizer.model   the tokenizer file, when the model was trained with one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "framework/config.h"

namespace moe {

// DeepseekV3Config fields for a model trained with `cfg`; `dtype` is f32, bf16 or int8
// (torch_dtype float32: int8 weights compute de-quantised). hf_import.h reads it back.
nlohmann::ordered_json hf_config(const Config& cfg, const std::string& dtype);

// quantization_config.quant_method of an int8 export.
inline constexpr const char* kInt8QuantMethod = "moe-int8-weight-only";
// Whether an int8 export stores tensor `name` as I8: 2-D ".weight" tensors outside
// int8_modules_not_converted() (module names; "*x" matches any module ending in x). The
// embedding table stays f32 unless `embeddings` (moe export --int8-embeddings).
bool int8_quantized(const std::string& name, const Shape& shape, bool embeddings = false);
std::vector<std::string> int8_modules_not_converted(bool embeddings = false);
// "<m>.weight" -> "<m>.weight_scale".
std::string int8_scale_name(const std::string& weight_name);

struct ExportSummary {
  int64_t tensors = 0, parameters = 0, bytes = 0;  // bytes: size of model.safetensors
};

// Writes out_dir/model.safetensors and out_dir/config.json (creating out_dir; files already there
// are replaced, each by an atomic rename). dtype is "f32", "bf16" or "int8"; the checkpoint must
// hold f32. int8_embeddings: int8 also for model.embed_tokens (one scale per token's row).
ExportSummary export_hf(const CheckpointReader& ckpt, const std::string& out_dir, const std::string& dtype,
                        bool int8_embeddings = false);

}  // namespace moe
