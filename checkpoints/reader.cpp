// CheckpointReader: COMMITTED, config.yaml and meta.json are read eagerly (small); tensors are read
// from state.h5 on demand, one dataset at a time.
#include <filesystem>

#include "checkpoints/checkpoint.h"
#include "checkpoints/h5.h"
#include "checkpoints/layout.h"
#include "framework/json_depth.h"
#include "framework/sha256.h"

namespace moe {
using namespace ckpt;

namespace {

static_assert(sizeof(hid_t) <= sizeof(long long), "CheckpointReader keeps the hid_t in a long long");

nlohmann::json read_json(const std::string& path) {
  std::string text = read_text_file(path);
  check_json_depth(text, path, "a JSON object as moe writes it");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers beyond double's range
    throw error(path, ": not valid JSON (", e.what(), ")");
  }
}

// The meta.json keys readers take (the trainer on resume, eval sweeps, generate), with the JSON type
// they read them as: checked here once, so no reader meets a type_error later. Other keys pass.
void check_meta_types(const nlohmann::json& meta, const std::string& path) {
  auto need = [&](const char* key, bool ok, const char* expected) {
    if (meta.contains(key) && !ok)
      throw error(path, ": \"", key, "\" is ", meta[key].dump(), " (expected ", expected, ")");
  };
  for (const char* key : {"step", "tokens", "optimizer_steps", "skipped_steps", "val_loss_step", "metrics_rows"})
    need(key, meta.contains(key) && meta[key].is_number_integer() && meta[key].get<int64_t>() >= 0,
         "an integer >= 0");
  for (const char* key : {"tokenizer", "tokenizer_hash"}) need(key, meta.contains(key) && meta[key].is_string(), "a string");
  need("val_loss", meta.contains("val_loss") && meta["val_loss"].is_number(), "a number");
}

// Opens dataset `name`, or says which file lacks it.
h5::Dataset open_dataset(hid_t file, const std::string& path, const std::string& name) {
  if (name.empty() || name == "." || name.find('/') != std::string::npos || H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw error(path, ": no dataset '", name, "'");
  }
  return h5::Dataset(h5::check(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, "cannot open dataset '" + name + "'"));
}

}  // namespace

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(resolve_checkpoint(dir)) {
  std::string committed_path = dir_ + "/" + kCommitted;
  committed_ = read_json(committed_path);
  if (!committed_.is_object() || !committed_.contains("step") || !committed_["step"].is_number_integer() ||
      !committed_.contains("files") || !committed_["files"].is_object())
    throw error(committed_path, ": malformed (expected {\"step\": N, \"files\": {name: sha256}})");
  step_ = committed_["step"].get<int64_t>();
  config_yaml_ = read_text_file(dir_ + "/" + kConfig);
  meta_ = read_json(dir_ + "/" + kMeta);
  if (!meta_.is_object()) throw error(dir_, "/", kMeta, ": expected a JSON object");
  check_meta_types(meta_, dir_ + "/" + kMeta);

  h5::init();
  std::string state = dir_ + "/" + kState;
  h5::Plist fapl = h5::file_access(state);
  h5::File f(h5::check(H5Fopen(state.c_str(), H5F_ACC_RDONLY, fapl.get()), state, "cannot open as HDF5"));
  format_version_ = h5::read_i64_attr(f.get(), state, "format_version").value_or(0);
  if (format_version_ > kCheckpointFormatVersion)
    throw error(state, ": format_version ", format_version_, " is newer than this build reads (expected <= ",
                kCheckpointFormatVersion, "; update moe)");
  world_size_ = h5::read_i64_attr(f.get(), state, "world_size").value_or(0);
  file_ = f.release();  // the destructor closes it from here on
}

CheckpointReader::~CheckpointReader() {
  if (file_ >= 0) H5Fclose(hid_t(file_));
}

int64_t CheckpointReader::step() const { return step_; }

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  auto collect = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  h5::check(H5Literate(hid_t(file_), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &out), dir_ + "/" + kState,
            "cannot list datasets");
  return out;
}

bool CheckpointReader::has(const std::string& name) const {
  if (name.empty() || name == "." || name.find('/') != std::string::npos) return false;
  htri_t r = H5Lexists(hid_t(file_), name.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

Shape CheckpointReader::shape(const std::string& name) const {
  std::string path = dir_ + "/" + kState;
  return h5::dataset_shape(open_dataset(hid_t(file_), path, name).get(), path);
}

DType CheckpointReader::dtype(const std::string& name) const {
  std::string path = dir_ + "/" + kState;
  return h5::dataset_dtype(open_dataset(hid_t(file_), path, name).get(), path, name);
}

void CheckpointReader::read(const std::string& name, Tensor& out) const {
  std::string path = dir_ + "/" + kState;
  h5::Dataset ds = open_dataset(hid_t(file_), path, name);
  Shape stored = h5::dataset_shape(ds.get(), path);
  if (stored != out.shape())
    throw error(path, ": dataset '", name, "' has shape ", shape_str(stored), ", expected ", shape_str(out.shape()));
  DType t = h5::dataset_dtype(ds.get(), path, name);
  if (t != out.dtype())
    throw error(path, ": dataset '", name, "' is ", dtype_name(t), ", expected ", dtype_name(out.dtype()));
  MOE_CHECK(out.device() == Device::CPU && out.defined(), "read '", name, "' into a defined CPU tensor");
  h5::read_tensor(ds.get(), path, name, out);
}

Tensor CheckpointReader::read(const std::string& name) const {
  std::string path = dir_ + "/" + kState;
  h5::Dataset ds = open_dataset(hid_t(file_), path, name);
  Tensor out = Tensor::empty(h5::dataset_shape(ds.get(), path), h5::dataset_dtype(ds.get(), path, name));
  h5::read_tensor(ds.get(), path, name, out);
  return out;
}

void CheckpointReader::verify() const {
  const nlohmann::json& files = committed_["files"];
  for (const char* required : {kState, kConfig, kMeta})
    if (!files.contains(required))
      throw error(dir_, "/", kCommitted, ": does not list ", required, " (expected a checksum for every file)");
  for (const auto& [name, sha] : files.items()) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." || !sha.is_string())
      throw error(dir_, "/", kCommitted, ": bad entry '", name, "' (expected file name: sha256)");
    std::string path = dir_ + "/" + name;
    if (!std::filesystem::exists(path)) throw error(path, ": missing (listed in ", kCommitted, ")");
    std::string actual = sha256_file(path);
    if (actual != sha.get<std::string>())
      throw error(path, ": checksum mismatch (sha256 ", actual, ", expected ", sha.get<std::string>(),
                  " from COMMITTED; the file is corrupt or was changed after the save)");
  }
}

}  // namespace moe
