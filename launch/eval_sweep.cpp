#include "launch/eval_sweep.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "checkpoints/checkpoint.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "framework/sha256.h"
#include "launch/model_source.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// "step-" and digits only: a committed folder's name (step-N.tmp is a save in progress).
bool is_step_name(const std::string& name) {
  return name.size() > 5 && name.rfind("step-", 0) == 0 &&
         std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw error(p.string(), ": cannot read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

EvalData parse_data_flag(const std::string& value) {
  EvalData d;
  const size_t eq = value.find('=');
  if (eq == std::string::npos) {
    d.dir = value;
    d.name = fs::path(strip_trailing_slashes(value)).filename().string();
  } else {
    d.name = value.substr(0, eq);
    d.dir = value.substr(eq + 1);
  }
  if (d.name.empty() || d.dir.empty()) throw error("--data '", value, "': expected NAME=DIR or DIR");
  return d;
}

std::string run_name_of(const std::string& checkpoint_dir) {
  fs::path root = fs::path(strip_trailing_slashes(checkpoint_dir)).parent_path();
  if (root.filename() == "checkpoints" && root.has_parent_path()) root = root.parent_path();
  std::string name = fs::absolute(root).lexically_normal().filename().string();
  if (name.empty()) name = fs::absolute(root).lexically_normal().parent_path().filename().string();
  return name.empty() ? "run" : name;
}

std::vector<std::string> find_checkpoints(const std::string& path_str, std::vector<std::string>& warnings,
                                          bool may_be_empty) {
  const fs::path path(strip_trailing_slashes(path_str));
  if (!path_exists(path)) {
    if (may_be_empty) return {};
    throw error(path_str, ": no such checkpoint or folder (expected a step-N folder, a 'latest' link, a checkpoints "
                "folder, a run folder or an export folder)");
  }
  // A single checkpoint: committed, or a step folder whose save never finished; or an export.
  if (path_exists(path / "COMMITTED")) return {resolve_checkpoint(path.string())};
  if (is_export_folder(path.string())) return {path.string()};
  if (is_step_name(path.filename().string())) {
    warnings.push_back("skipping checkpoint " + path.string() + ": not committed (a save that did not finish)");
    return {};
  }
  const fs::path root = fs::is_directory(path / "checkpoints") ? path / "checkpoints" : path;
  std::vector<std::string> found = list_checkpoints(root.string());
  std::error_code ec;
  std::vector<std::string> half;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_step_name(name) && entry.is_directory() && !path_exists(entry.path() / "COMMITTED")) half.push_back(name);
  }
  std::sort(half.begin(), half.end());
  for (const std::string& name : half)
    warnings.push_back("skipping checkpoint " + (root / name).string() + ": not committed (a save that did not finish)");
  if (found.empty() && half.empty() && !may_be_empty)
    throw error(path_str, ": no checkpoint in this folder (expected step-N folders with a COMMITTED file, or a run "
                "folder with checkpoints/)");
  return found;
}

namespace {

// An export is keyed by its contents, as a checkpoint by its COMMITTED file.
SweepCheckpoint read_sweep_export(const std::string& dir) {
  const ModelSource src = open_model_source(dir);
  SweepCheckpoint c;
  c.dir = dir;
  c.is_export = true;
  c.run = fs::absolute(fs::path(strip_trailing_slashes(dir))).lexically_normal().filename().string();
  c.step = src.step;
  Sha256 h;
  h.update(sha256_file((fs::path(dir) / "config.json").string()));
  h.update(sha256_file((fs::path(dir) / "model.safetensors").string()));
  c.checksum = h.hex();
  c.tokens_seen = src.tokens;
  c.tokenizer = src.tokenizer;
  c.tokenizer_hash = src.tokenizer_hash;
  c.config_yaml = config_to_yaml(src.config);
  return c;
}

}  // namespace

SweepCheckpoint read_sweep_checkpoint(const std::string& dir) {
  if (!path_exists(fs::path(dir) / "COMMITTED") && is_export_folder(dir)) return read_sweep_export(dir);
  SweepCheckpoint c;
  c.dir = dir;
  c.run = run_name_of(dir);
  const fs::path p(dir);
  const std::string committed = read_file(p / "COMMITTED");
  c.checksum = sha256_hex(committed);
  nlohmann::json meta;
  const std::string meta_text = read_file(p / "meta.json");
  check_json_depth(committed, (p / "COMMITTED").string(), "{\"step\": N, \"files\": {...}}");
  check_json_depth(meta_text, (p / "meta.json").string(), "a JSON object as moe writes it");
  try {
    const nlohmann::json com = nlohmann::json::parse(committed);
    c.step = com.at("step").get<int64_t>();
    meta = nlohmann::json::parse(meta_text);
  } catch (const nlohmann::json::exception& e) {
    throw error(dir, ": COMMITTED or meta.json is not readable (", e.what(), ")");
  }
  if (meta.is_object()) {
    if (meta.contains("tokens") && meta["tokens"].is_number_integer()) c.tokens_seen = meta["tokens"].get<int64_t>();
    if (meta.contains("tokenizer") && meta["tokenizer"].is_string()) c.tokenizer = meta["tokenizer"];
    if (meta.contains("tokenizer_hash") && meta["tokenizer_hash"].is_string()) c.tokenizer_hash = meta["tokenizer_hash"];
  }
  c.config_yaml = read_file(p / "config.yaml");
  return c;
}

}  // namespace moe
