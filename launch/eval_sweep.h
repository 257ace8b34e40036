// What `moe eval` sweeps over: the committed checkpoints under each --checkpoint path and the
// datasets named by --data, with what each result row records about them (run name, step, tokens
// seen, content checksum).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

// --data NAME=DIR, or --data DIR (named after the folder).
struct EvalData {
  std::string name, dir;
};
EvalData parse_data_flag(const std::string& value);

// The committed checkpoint folders under `path`, oldest first: a step-N folder or a `latest` link
// (that one), a checkpoints folder (each step-N in it), or a run folder (its checkpoints/); or an
// export folder of moe export (config.json + model.safetensors: that one). A
// step folder without COMMITTED (a save that never finished) is not listed; `warnings` gets a line
// naming it. A path that does not exist is a moe::Error unless `may_be_empty` (--watch before the
// first save).
std::vector<std::string> find_checkpoints(const std::string& path, std::vector<std::string>& warnings,
                                          bool may_be_empty = false);

// What a row needs from a committed checkpoint, read from its small files (config.yaml,
// meta.json, COMMITTED), or from an export (launch/model_source.h); throws moe::Error naming the
// file when one is missing or unreadable.
struct SweepCheckpoint {
  std::string dir;
  bool is_export = false;
  std::string run;       // the run folder's name (the folder holding checkpoints/); an export's folder name
  int64_t step = 0;      // an export's recorded step (-1 when not recorded)
  // sha256 of COMMITTED (which lists the sha256 of every other file); for an export, sha256 of
  // the hex sha256 of config.json followed by that of model.safetensors.
  std::string checksum;
  int64_t tokens_seen = -1;   // meta.json "tokens"; -1 when not recorded
  std::string tokenizer, tokenizer_hash;  // meta.json; "" when not recorded
  std::string config_yaml;
};
SweepCheckpoint read_sweep_checkpoint(const std::string& dir);

// The name a run is shown under: ".../NAME/checkpoints/step-N" -> NAME, else the folder holding
// the step folder.
std::string run_name_of(const std::string& checkpoint_dir);

}  // namespace moe
