#include "launch/data_sources.h"

#include <algorithm>
#include <filesystem>

#include "framework/error.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

// "wiki" for "data/wiki/", then "wiki-2", ... for folders of the same name.
std::vector<std::string> unique_names(const std::vector<std::string>& paths) {
  std::vector<std::string> names;
  for (const std::string& p : paths) {
    std::string base = fs::path(p).lexically_normal().filename().string();
    if (base.empty()) base = fs::path(p).lexically_normal().parent_path().filename().string();
    if (base.empty()) base = "source";
    std::string name = base;
    for (int k = 2; std::find(names.begin(), names.end(), name) != names.end(); ++k) name = base + "-" + std::to_string(k);
    names.push_back(name);
  }
  return names;
}

}  // namespace

DataSources open_data_sources(const Config& cfg) {
  DataSources d;
  d.mixture = !cfg.data.mix.empty();
  if (d.mixture) {
    for (const DataSource& s : cfg.data.mix) d.paths.push_back(s.path), d.weights.push_back(s.weight);
    d.names = unique_names(d.paths);
  } else {
    if (cfg.data.path.empty())
      throw error(cfg.source, ": data.path is empty (expected a folder made by moe preprocess, or data.mix)");
    d.paths = {cfg.data.path};
    d.weights = {1.0};
    d.names = {""};
  }
  for (size_t i = 0; i < d.paths.size(); ++i) {
    const std::string key = d.mixture ? "data.mix[" + std::to_string(i) + "]: " : "";
    try {
      d.train.push_back(TokenDataset::open(d.paths[i], "train"));
      d.val.push_back(TokenDataset::open(d.paths[i], "val"));
    } catch (const Error& e) {
      throw error(key, e.what());
    }
    for (const TokenDataset* split : {&d.train.back(), &d.val.back()}) {
      if (split->vocab_size() > cfg.model.vocab_size)
        throw error(cfg.source, ": ", key, "model.vocab_size is ", cfg.model.vocab_size, " but ", split->dir(),
                    " was tokenized with vocab_size ", split->vocab_size(), " (expected model.vocab_size >= ",
                    split->vocab_size(), ")");
      const TokenDataset& first = d.train.front();
      if (split->num_tokens() > 0 && split->tokenizer_hash() != first.tokenizer_hash())
        throw error(split->dir(), "/manifest.json: ", key, "tokenizer '", split->tokenizer_name(), "' (hash ",
                    split->tokenizer_hash().substr(0, 12), ") differs from ", first.dir(), "'s '",
                    first.tokenizer_name(), "' (hash ", first.tokenizer_hash().substr(0, 12),
                    ") (expected every data.mix source made with the same tokenizer)");
    }
  }
  return d;
}

}  // namespace moe
