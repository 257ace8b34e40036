// Checkpoints (docs/formats.md): <root>/step-00000100/ holds
//   state.h5     one dataset per tensor, full logical shape, named as given (Hugging Face names
//                for parameters, "optimizer.exp_avg.<name>" / "optimizer.exp_avg_sq.<name>" for
//                the AdamW moments); f32 unless the tensor says otherwise
//   config.yaml  the config the run was trained with
//   meta.json    step, tokens seen, sampler state, anything the trainer wants back
//   COMMITTED    written last: sha256 of every other file
// A save writes step-N.tmp/ and renames it on commit; `latest` is a symlink switched by rename.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/tensor.h"

namespace moe {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU, contiguous
};

// Saves and commits (creating `root` if needed); then removes leftover step-*.tmp folders and all
// but the newest `keep_last` committed checkpoints (0 = keep all; never the one just written).
// Names must be unique and contain no '/'; `meta` is a JSON object (or null) and gets "step" set.
// Returns the committed folder's path, root + "/step-%08d".
std::string save_checkpoint(const std::string& root, int64_t step, const std::vector<NamedTensor>& tensors,
                            const std::string& config_yaml, const nlohmann::json& meta, int keep_last);

// Resolves what the user gave: a checkpoint folder, the `latest` link, or a checkpoints root (→ its
// newest committed checkpoint). Throws moe::Error if nothing committed is there.
std::string resolve_checkpoint(const std::string& path);
// Every committed checkpoint under a root, oldest first (for `moe eval` over a folder); a root that
// does not exist yet has none. step-N.tmp folders (saves in progress or crashed) are never listed.
std::vector<std::string> list_checkpoints(const std::string& root);
// The newest committed checkpoint under root whose checksums verify, or "" if none. Each one that
// fails is named in a "warning: skipping checkpoint ..." line on stderr.
std::string find_resume_checkpoint(const std::string& root);

class CheckpointReader {
 public:
  // `dir` goes through resolve_checkpoint (so `latest` and a checkpoints root work too); throws
  // moe::Error if nothing committed is there or its files cannot be parsed. Not thread-safe: the
  // HDF5 library serialises nothing, so read from one thread.
  explicit CheckpointReader(const std::string& dir);  // throws moe::Error if not a committed checkpoint
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;
  const std::string& dir() const { return dir_; }
  int64_t step() const;
  const std::string& config_yaml() const { return config_yaml_; }
  const nlohmann::json& meta() const { return meta_; }
  std::vector<std::string> names() const;
  bool has(const std::string& name) const;
  Shape shape(const std::string& name) const;
  DType dtype(const std::string& name) const;
  // Reads dataset `name` into `out` (shape and dtype must match); throws moe::Error naming the dataset.
  void read(const std::string& name, Tensor& out) const;
  Tensor read(const std::string& name) const;  // into a new tensor of the stored shape and dtype
  void verify() const;  // sha256 of every file against COMMITTED

 private:
  std::string dir_, config_yaml_;
  nlohmann::json meta_, committed_;  // committed_: COMMITTED's {step, files: {name: sha256}}
  int64_t step_ = 0;
  long long file_ = -1;  // hid_t of state.h5
};

}  // namespace moe
