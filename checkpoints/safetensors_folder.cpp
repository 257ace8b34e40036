#include "checkpoints/safetensors_folder.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/json_depth.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSingle = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

bool SafetensorsFolder::has_weights(const std::string& dir) {
  return is_file(fs::path(dir) / kSingle) || is_file(fs::path(dir) / kIndex);
}

SafetensorsFolder::SafetensorsFolder(const std::string& dir) : dir_(dir) {
  const fs::path index_path = fs::path(dir) / kIndex;
  if (!is_file(index_path)) {
    // A single file: its header is the index.
    readers_.push_back(std::make_unique<SafetensorsReader>((fs::path(dir) / kSingle).string()));
    files_ = readers_[0]->path();
    for (const auto& [name, info] : readers_[0]->tensors()) where_[name] = readers_[0].get();
    return;
  }
  const std::string ip = index_path.string();
  files_ = ip + "'s shards";
  nlohmann::json index;
  {
    std::ifstream in(index_path, std::ios::binary);
    if (!in) throw error(ip, ": cannot read");
    std::stringstream text;
    text << in.rdbuf();
    check_json_depth(text.str(), ip, "{\"weight_map\": {tensor: file}}");
    try {
      index = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      throw error(ip, ": not JSON (", e.what(), ")");
    }
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw error(ip, ": expected an object with \"weight_map\": {tensor: file}");
  std::map<std::string, const SafetensorsReader*> by_file;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().empty() || file.get<std::string>().find('/') != std::string::npos)
      throw error(ip, ": weight_map '", name, "' is ", file.dump(), " (expected a file name in ", dir, ")");
    const std::string f = file.get<std::string>();
    auto it = by_file.find(f);
    if (it == by_file.end()) {
      const fs::path shard = fs::path(dir) / f;
      if (!is_file(shard)) throw error(shard.string(), ": missing (a shard named in ", ip, ", for '", name, "')");
      readers_.push_back(std::make_unique<SafetensorsReader>(shard.string()));
      it = by_file.emplace(f, readers_.back().get()).first;
    }
    if (!it->second->has(name))
      throw error(it->second->path(), ": no tensor '", name, "' (", ip, " places it in this file)");
    where_[name] = it->second;
  }
  // A tensor in a shard that the index does not name would be silently ignored: refuse it.
  for (const auto& r : readers_)
    for (const auto& [name, info] : r->tensors())
      if (!where_.count(name))
        throw error(r->path(), ": tensor '", name, "' is not in ", ip, "'s weight_map");
}

const SafetensorsReader& SafetensorsFolder::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw error(files_, ": no tensor '", name, "'");
  return *it->second;
}

std::vector<std::string> SafetensorsFolder::names() const {
  std::vector<std::string> out;
  for (const auto& [name, r] : where_) out.push_back(name);
  return out;
}

}  // namespace moe
