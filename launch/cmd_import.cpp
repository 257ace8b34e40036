// `moe import --hf DIR --output CKPT_DIR`: a Hugging Face DeepseekV3 folder (config.json and
// model.safetensors, or shards with model.safetensors.index.json) as a step-0 checkpoint of its
// weights, no optimizer state: what checkpoint.init_from, moe eval and moe generate read.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_import.h"
#include "checkpoints/hf_export.h"
#include "checkpoints/safetensors_folder.h"
#include "framework/backend.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/model_io.h"
#include "launch/model_source.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

// The tokenizer to record in meta.json: "byte" when moe export said so; else a tokenizer.json in
// the folder, copied to CKPT_DIR/tokenizer.json (outside the step folder, whose files COMMITTED
// lists) and recorded by absolute path; else none ("" : moe generate and eval then need --tokenizer).
std::string import_tokenizer(const fs::path& hf_dir, const nlohmann::json& hf, const fs::path& out_root) {
  if (hf.contains("moe") && hf["moe"].is_object() && hf["moe"].value("tokenizer", nlohmann::json()) == "byte")
    return "byte";
  const fs::path src = hf_dir / "tokenizer.json";
  std::error_code ec;
  if (!fs::is_regular_file(src, ec)) return "";
  fs::create_directories(out_root, ec);
  const fs::path dst = fs::absolute(out_root / "tokenizer.json").lexically_normal();
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
  if (ec) throw error(src.string(), ": cannot copy to ", dst.string(), " (", ec.message(), ")");
  return dst.string();
}

// quantization_config says how the weights are stored; only what load_hf_weights decodes is accepted:
// DeepSeek-V3's FP8 with 128x128 blocks, or moe export's int8.
void check_quantization(const nlohmann::json& hf, const std::string& source) {
  if (!hf.contains("quantization_config")) return;
  const nlohmann::json& q = hf["quantization_config"];
  const nlohmann::json method = q.is_object() ? q.value("quant_method", nlohmann::json()) : nlohmann::json();
  if (method == kInt8QuantMethod) return;
  if (method == "fp8" && q.value("weight_block_size", nlohmann::json()) == nlohmann::json({128, 128}) &&
      q.value("fmt", std::string("e4m3")) == "e4m3")
    return;
  throw error(source, ": quantization_config ", q.dump(), " (expected quant_method \"fp8\" with fmt \"e4m3\" and ",
              "weight_block_size [128, 128], or \"", kInt8QuantMethod, "\")");
}

}  // namespace

int cmd_import(int argc, char** argv) {
  Args a(argc, argv, {"hf", "output"}, {});
  if (a.help()) {
    puts("usage: moe import --hf DIR --output CKPT_DIR\n"
         "\n"
         "Reads a Hugging Face DeepseekV3 folder (config.json; model.safetensors, or the shards that\n"
         "model.safetensors.index.json names) and writes CKPT_DIR/step-00000000: the weights (F32, BF16,\n"
         "or FP8 E4M3 with 128x128 weight_scale_inv blocks, all stored as f32), no optimizer state.\n"
         "Use it with checkpoint.init_from, moe eval and moe generate. A tokenizer.json in DIR is copied\n"
         "to CKPT_DIR/tokenizer.json and recorded in meta.json. Config keys this build does not\n"
         "implement (rope_scaling, ...) are an error. Prints one JSON line.");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe import: unexpected argument '", a.positional()[0], "' (see --help)");
  const fs::path hf_dir = a.required("hf");
  const std::string out = a.required("output");
  std::error_code ec;
  if (!fs::is_directory(hf_dir, ec))
    throw error("--hf ", hf_dir.string(), ": not a folder (expected config.json and model.safetensors)");
  if (!list_checkpoints(out).empty())
    throw error("--output ", out, ": already holds checkpoints (expected a new or empty folder)");
  const std::string config_path = (hf_dir / "config.json").string();
  const nlohmann::json hf = read_json_file(config_path, "a DeepseekV3 config.json");
  Config cfg = config_from_hf(hf, config_path);
  check_quantization(hf, config_path);
  if (!SafetensorsFolder::has_weights(hf_dir.string()))
    throw error(hf_dir.string(), ": no model.safetensors or model.safetensors.index.json");
  const SafetensorsFolder st(hf_dir.string());

  ComputeScope on_host(cpu_backend());
  DeepSeekV3 model(cfg.model);
  load_hf_weights(st, model);

  nlohmann::json meta = {{"tokens", 0}, {"imported_from", fs::absolute(hf_dir).lexically_normal().string()}};
  const std::string tok = import_tokenizer(hf_dir, hf, out);
  if (!tok.empty()) meta["tokenizer"] = tok;
  if (hf.contains("moe") && hf["moe"].is_object() && hf["moe"].value("tokenizer_hash", nlohmann::json()).is_string())
    meta["tokenizer_hash"] = hf["moe"]["tokenizer_hash"];
  const std::vector<NamedTensor> tensors = checkpoint_tensors(model, nullptr);
  int64_t parameters = 0;
  for (const NamedTensor& t : tensors) parameters += t.tensor.numel();
  const std::string dir = save_checkpoint(out, 0, tensors, config_to_yaml(cfg), meta, Retention());
  nlohmann::ordered_json line = {{"hf", hf_dir.string()},     {"output", dir},
                                 {"tensors", tensors.size()}, {"parameters", parameters},
                                 {"tokenizer", tok}};
  puts(line.dump().c_str());
  return 0;
}

}  // namespace moe
