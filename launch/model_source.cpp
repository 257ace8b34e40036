#include "launch/model_source.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_export.h"
#include "checkpoints/hf_import.h"
#include "checkpoints/int8_weights.h"
#include "checkpoints/safetensors.h"
#include "checkpoints/safetensors_folder.h"
#include "framework/backend.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "framework/kernels/fp8.h"
#include "launch/model_io.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

constexpr const char* kWeights = "model.safetensors";
constexpr const char* kHfConfig = "config.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

ModelSource open_checkpoint(const std::string& path) {
  CheckpointReader ckpt(resolve_checkpoint(path));
  ModelSource s;
  s.path = ckpt.dir();
  s.kind = "checkpoint";
  s.config = parse_config(ckpt.config_yaml(), ckpt.dir() + "/config.yaml");
  const nlohmann::json& meta = ckpt.meta();
  s.tokenizer = meta.value("tokenizer", std::string("byte"));
  s.tokenizer_hash = meta.value("tokenizer_hash", std::string());
  s.step = ckpt.step();
  if (meta.contains("tokens") && meta["tokens"].is_number_integer()) s.tokens = meta["tokens"].get<int64_t>();
  if (meta.contains("val_loss") && meta["val_loss"].is_number()) s.val_loss = meta["val_loss"].get<double>();
  s.dtype = "f32";
  return s;
}

ModelSource open_export(const fs::path& dir) {
  const fs::path config_path = dir / kHfConfig;
  const std::string source = config_path.string();
  const nlohmann::json hf = read_json_file(source, "a DeepseekV3 config.json");
  ModelSource s;
  s.path = dir.string();
  s.kind = "export";
  s.config = config_from_hf(hf, source);
  s.dtype = "f32";
  if (hf.contains("quantization_config")) {
    const nlohmann::json& q = hf["quantization_config"];
    if (!q.is_object() || q.value("quant_method", nlohmann::json()) != kInt8QuantMethod)
      throw error(source, ": quantization_config ", q.dump(), " (expected quant_method \"", kInt8QuantMethod,
                  "\", the int8 export of moe export)");
    s.dtype = "int8";
  } else if (hf.value("torch_dtype", nlohmann::json()) == "bfloat16") {
    s.dtype = "bf16";
  }
  // Recorded by moe export; a folder from elsewhere may lack it (then --tokenizer is needed).
  if (hf.contains("moe")) {
    const nlohmann::json& m = hf["moe"];
    if (!m.is_object()) throw error(source, ": \"moe\" is ", m.dump(), " (expected an object)");
    if (m.contains("tokenizer") && !m["tokenizer"].is_string())
      throw error(source, ": \"moe.tokenizer\" is ", m["tokenizer"].dump(), " (expected a string)");
    s.tokenizer = m.value("tokenizer", std::string());
    // A file copied into the folder is named relative to it.
    if (!s.tokenizer.empty() && s.tokenizer != "byte" && fs::path(s.tokenizer).is_relative())
      s.tokenizer = fs::absolute(dir / s.tokenizer).lexically_normal().string();
    if (m.contains("tokenizer_hash") && m["tokenizer_hash"].is_string()) s.tokenizer_hash = m["tokenizer_hash"];
    if (m.contains("step") && m["step"].is_number_integer()) s.step = m["step"].get<int64_t>();
    if (m.contains("tokens") && m["tokens"].is_number_integer()) s.tokens = m["tokens"].get<int64_t>();
    if (m.contains("val_loss") && m["val_loss"].is_number()) s.val_loss = m["val_loss"].get<double>();
  }
  SafetensorsReader check((dir / kWeights).string());  // a corrupt or truncated file fails here, not later
  (void)check;
  return s;
}

// `name` (FP8 E4M3) times its 128x128 block scales `<name>_scale_inv` (F32 [ceil(rows/128),
// ceil(cols/128)]), as DeepSeek-V3's release stores its Linear weights.
void dequantize_fp8_blocks(const SafetensorsFolder& st, const ParamInfo& p, float* dst, std::set<std::string>& used) {
  const SafetensorsReader& f = st.file_of(p.name);
  const std::string scale_name = p.name + "_scale_inv";
  const int64_t rows = p.shape.size() == 2 ? p.shape[0] : 0, cols = p.shape.size() == 2 ? p.shape[1] : 0;
  const int64_t tile = kern::kFp8Tile, br = (rows + tile - 1) / tile, bc = (cols + tile - 1) / tile;
  if (p.shape.size() != 2)
    throw error(f.path(), ": tensor '", p.name, "' is F8_E4M3 (expected F32 or BF16 for a tensor that is not a matrix)");
  const SafetensorsReader& sf = st.file_of(scale_name);
  const SafetensorsReader::Info& si = sf.info(scale_name);
  if (si.dtype != "F32" || si.shape != Shape{br, bc})
    throw error(sf.path(), ": tensor '", scale_name, "' is ", si.dtype, " ", nlohmann::json(si.shape).dump(),
                " (expected F32 [", br, ", ", bc, "], one scale per 128x128 block of '", p.name, "')");
  used.insert(scale_name);
  const std::vector<char> q = f.read_bytes(p.name);
  std::vector<float> scale(size_t(br * bc));
  const std::vector<char> scale_bytes = sf.read_bytes(scale_name);
  if (!scale.empty()) std::memcpy(scale.data(), scale_bytes.data(), scale_bytes.size());
  for (float s : scale)
    if (!std::isfinite(s)) throw error(sf.path(), ": tensor '", scale_name, "' holds ", s, " (expected finite scales)");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[r * cols + c] = kern::e4m3_bits_to_f32(uint8_t(q[size_t(r * cols + c)])) * scale[size_t((r / tile) * bc + c / tile)];
}

// Every parameter of `model` from the folder's tensors; nothing may be missing or left over.
void load_export_tensors(const SafetensorsFolder& st, DeepSeekV3& model) {
  const ParamStore& ps = model.params();
  std::set<std::string> used;
  for (const ParamInfo& p : ps.infos()) {
    const SafetensorsReader& f = st.file_of(p.name);
    const SafetensorsReader::Info& info = f.info(p.name);
    if (info.shape != p.shape)
      throw error(f.path(), ": tensor '", p.name, "' has shape ", nlohmann::json(info.shape).dump(), " (expected ",
                  nlohmann::json(p.shape).dump(), " for the model config.json describes)");
    float* dst = ps.params() + p.offset;
    used.insert(p.name);
    if (info.dtype == "I8") {
      const std::string scale_name = int8_scale_name(p.name);
      const SafetensorsReader& sf = st.file_of(scale_name);
      const SafetensorsReader::Info& si = sf.info(scale_name);
      if (si.dtype != "F32" || si.shape != Shape{p.shape[0]})
        throw error(sf.path(), ": tensor '", scale_name, "' is ", si.dtype, " ", nlohmann::json(si.shape).dump(),
                    " (expected F32 [", p.shape[0], "], one scale per row of '", p.name, "')");
      used.insert(scale_name);
      const std::vector<char> q = f.read_bytes(p.name);
      std::vector<float> scale(size_t(p.shape[0]));
      const std::vector<char> scale_bytes = sf.read_bytes(scale_name);
      std::memcpy(scale.data(), scale_bytes.data(), scale_bytes.size());
      for (float s : scale)
        if (!(s >= 0 && std::isfinite(s)))
          throw error(sf.path(), ": tensor '", scale_name, "' holds ", s, " (expected finite scales >= 0)");
      dequantize_rows_int8(reinterpret_cast<const int8_t*>(q.data()), scale.data(), p.shape[0],
                           shape_numel(p.shape) / std::max<int64_t>(p.shape[0], 1), dst);
    } else if (info.dtype == "F8_E4M3") {
      dequantize_fp8_blocks(st, p, dst, used);
    } else {
      Tensor t = f.read_f32(p.name);
      std::copy(t.f32(), t.f32() + t.numel(), dst);
    }
  }
  // The copies of the shared embedding and head that DeepSeek-V3's release keeps in each MTP module
  // (moe export writes them; the model shares the main model's).
  const ModelConfig& c = model.config();
  for (int k = 1; k <= c.mtp_depth; ++k)
    for (const char* copy : {".embed_tokens.weight", ".shared_head.head.weight"}) {
      const std::string name = "model.layers." + std::to_string(c.layers + k - 1) + copy;
      used.insert(name);
      used.insert(int8_scale_name(name));
      used.insert(name + "_scale_inv");
    }
  for (const std::string& name : st.names())
    if (!used.count(name))
      throw error(st.file_of(name).path(), ": unexpected tensor '", name,
                  "' (not a parameter of the model config.json describes)");
}

}  // namespace

bool is_export_folder(const std::string& dir) {
  return is_file(fs::path(dir) / kHfConfig) && is_file(fs::path(dir) / kWeights);
}

ModelSource open_model_source(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw error(path, ": no such checkpoint or export (expected a step-N folder, a 'latest' link, a checkpoints "
                "folder, or a folder with config.json and model.safetensors from moe export)");
  if (fs::is_directory(path, ec)) {
    if (is_export_folder(path)) return open_export(fs::path(path));
    // Half an export is named as such, not as a folder without checkpoints.
    const bool has_config = is_file(fs::path(path) / kHfConfig), has_weights = is_file(fs::path(path) / kWeights);
    if (has_config != has_weights)
      throw error(path, ": ", has_config ? kHfConfig : kWeights, " without ", has_config ? kWeights : kHfConfig,
                  " (expected an export folder of moe export, with both)");
  }
  return open_checkpoint(path);
}

std::unique_ptr<DeepSeekV3> load_model(const ModelSource& src) {
  if (!src.is_export()) return load_model(CheckpointReader(src.path));
  const SafetensorsFolder st(src.path);
  auto model = std::make_unique<DeepSeekV3>(src.config.model);
  if (model->params().device() == Device::CPU) {
    load_export_tensors(st, *model);
    return model;
  }
  ComputeScope on_host(cpu_backend());
  DeepSeekV3 host(src.config.model);
  load_export_tensors(st, host);
  device_backend(model->params().device())
      .upload(model->params().params(), host.params().params(), size_t(host.params().numel()) * sizeof(float));
  return model;
}

}  // namespace moe

namespace moe {

void load_hf_weights(const SafetensorsFolder& st, DeepSeekV3& model) { load_export_tensors(st, model); }

std::unique_ptr<Tokenizer> open_tokenizer(const ModelSource& src, const std::string& override) {
  const std::string name = override.empty() ? src.tokenizer : override;
  if (name.empty())
    throw error(src.path, ": the ", src.kind, " does not record its tokenizer (trained on a bare Megatron dataset); "
                "pass --tokenizer (expected byte, a tokenizer.json or a SentencePiece .model)");
  return make_tokenizer(name);
}

}  // namespace moe
