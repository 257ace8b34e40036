// The weights of a Hugging Face folder: one model.safetensors, or the shards that
// model.safetensors.index.json names ({"weight_map": {tensor: file}}). Every file is opened (and its
// header checked) up front, so a missing shard or a tensor the index places in no file, or in a file
// that lacks it, is an error naming the file before anything is read.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/safetensors.h"

namespace moe {

class SafetensorsFolder {
 public:
  // Throws moe::Error naming the file when neither file is there, or either is malformed.
  explicit SafetensorsFolder(const std::string& dir);

  // True when `dir` holds model.safetensors or model.safetensors.index.json.
  static bool has_weights(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  // The file holding `name`; throws "<dir>: no tensor '<name>' in <files>" when absent.
  const SafetensorsReader& file_of(const std::string& name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;

 private:
  std::string dir_, files_;  // files_: how errors name where a tensor was looked for
  std::vector<std::unique_ptr<SafetensorsReader>> readers_;
  std::map<std::string, const SafetensorsReader*> where_;
};

}  // namespace moe
