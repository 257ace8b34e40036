// Where a model to run comes from: a training checkpoint (a step-N folder, a `latest` link, a
// checkpoints folder, as resolve_checkpoint takes it) or an export folder (config.json +
// model.safetensors as `moe export` writes it: f32, bf16 or int8 weights). `moe generate`, `moe
// eval` and `moe serve` open either through here.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "data_pipeline/tokenizer.h"
#include "framework/config.h"
#include "model/model.h"

namespace moe {

struct ModelSource {
  std::string path;  // the resolved folder: the step-N folder, or the export folder
  std::string kind;  // "checkpoint" | "export"
  Config config;     // the model config and data.seq_len (the trained context); validated
  // "byte", a tokenizer file (absolute for a file in an export folder), or "" when not recorded.
  std::string tokenizer, tokenizer_hash;
  int64_t step = -1;     // -1 when not recorded
  int64_t tokens = -1;   // tokens trained on; -1 when not recorded
  std::optional<double> val_loss;  // the latest validation loss at or before `step`
  std::string dtype;     // the weights as stored: "f32" (checkpoints), "bf16" or "int8"

  bool is_export() const { return kind == "export"; }
};

// The tokenizer for src: `override` (a --tokenizer flag) when given, else the one src records;
// moe::Error naming src when neither says.
std::unique_ptr<Tokenizer> open_tokenizer(const ModelSource& src, const std::string& override);

// True when `dir` holds config.json and model.safetensors.
bool is_export_folder(const std::string& dir);

// Opens a checkpoint or an export: reads its config and what was recorded with it, and for an
// export checks the safetensors header against the file. Throws moe::Error naming the path and
// what is wrong (nonexistent, not committed, not a DeepseekV3 config we build, corrupt header).
ModelSource open_model_source(const std::string& path);

// The model, weights loaded (int8 and bf16 de-quantised to f32), on the compute device
// (framework/backend.h) as launch/model_io.h's load_model. An export must hold exactly the
// model's tensors with their shapes (int8 weights with their weight_scale).
std::unique_ptr<DeepSeekV3> load_model(const ModelSource& src);

class SafetensorsFolder;

// Every parameter of `model` (on the host) from a Hugging Face folder's tensors, under their
// Hugging Face names: F32 and BF16 as stored, I8 with its per-row `<name>.weight_scale` (moe export
// --dtype int8), F8_E4M3 with its 128x128 block scales `<name>_scale_inv` (DeepSeek-V3's release).
// Nothing may be missing, of another shape, or left over; errors name the file and the tensor.
void load_hf_weights(const SafetensorsFolder& st, DeepSeekV3& model);

}  // namespace moe
