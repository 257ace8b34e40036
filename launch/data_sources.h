// The training data of `moe train`: the train and val splits of data.path, or of every folder of
// data.mix with its weight, checked to be usable together (one tokenizer, ids within the model's
// vocabulary).
#pragma once
#include <string>
#include <vector>

#include "data_pipeline/shards.h"
#include "framework/config.h"

namespace moe {

struct DataSources {
  std::vector<std::string> names;  // data.mix: each folder's name (made unique); data.path: ""
  std::vector<std::string> paths;
  std::vector<double> weights;     // as given (the mixture normalises them)
  std::vector<TokenDataset> train, val;
  bool mixture = false;            // data.mix: per-source losses are reported
};

// Opens every split; a bad source is one error naming its data.mix entry and the file.
DataSources open_data_sources(const Config& cfg);

}  // namespace moe
