// Checkpoints (docs/checkpoints.md): <root>/step-00000100/ holds
//   state.h5     one dataset per tensor, full logical shape, named as given (Hugging Face names
//                for parameters, "optimizer.exp_avg.<name>" / "optimizer.exp_avg_sq.<name>" for
//                the AdamW moments); f32 unless the tensor says otherwise; root attributes
//                format_version, step, world_size
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

// The layout version written to state.h5's root attribute "format_version". Readers refuse a
// newer one; checkpoints from before the attribute existed read as version 0 (same layout).
inline constexpr int64_t kCheckpointFormatVersion = 1;

struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU, contiguous
};

// Which committed checkpoints a save leaves behind: the newest keep_last (0 = all), plus every
// milestone, a step that is a multiple of keep_every (0 = none). Never the one just written.
struct Retention {
  Retention(int keep_last = 0, int64_t keep_every = 0) : keep_last(keep_last), keep_every(keep_every) {}
  int keep_last;
  int64_t keep_every;
};

// Saves and commits (creating `root` if needed); then removes leftover step-*.tmp folders and the
// checkpoints `retention` does not keep. A save that fails throws moe::Error, removes its own
// step-N.tmp and touches no committed checkpoint. Names must be unique and contain no '/'; `meta`
// is a JSON object (or null) and gets "step" set; world_size (the number of ranks the state was
// trained on) is recorded for readers. Returns the committed folder's path, root + "/step-%08d".
std::string save_checkpoint(const std::string& root, int64_t step, const std::vector<NamedTensor>& tensors,
                            const std::string& config_yaml, const nlohmann::json& meta, Retention retention,
                            int world_size = 1);

// Sharded saves (FSDP): every rank writes its own pieces of the logical tensors into the same
// state.h5 as hyperslabs, rank by rank (HDF5 files take one writer at a time; rank 0 first, creating
// every dataset), and rank 0 commits after the last rank is done. Ranks signal each other through
// marker files in step-N.tmp/ named with save_id (the same on every rank, new for every save, so
// markers of a crashed earlier attempt never count); no MPI, so the writes run on background
// threads. A rank whose write fails leaves a marker with its message, which fails the save on the
// others too; a rank that waits longer than wait_timeout_s (0 = forever) for the rank before it fails.

// One rank's part of a tensor: elements [begin, begin + data.numel()) of the row-major flattening
// of tensor `name`, whose full logical shape is `shape` (at most two dimensions unless whole).
struct TensorPiece {
  std::string name;
  Shape shape;
  int64_t begin = 0;
  Tensor data;  // CPU, contiguous; its dtype is the dataset's
};
struct DatasetSpec {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
};
struct ShardedSave {
  int rank = 0, world = 1;
  std::string save_id = "0";
  double wait_timeout_s = 600;
  int recorded_world_size = 0;  // state.h5's world_size attribute; 0: world
};

// Whole tensors as the pieces and datasets of a one-rank save.
struct WholeTensors {
  std::vector<TensorPiece> pieces;
  std::vector<DatasetSpec> datasets;
};
WholeTensors whole_tensors(const std::vector<NamedTensor>& tensors);

// `datasets` lists every tensor of the checkpoint (used by rank 0 only). Rank 0 returns the
// committed folder, other ranks "" once their pieces are written and marked. Otherwise as
// save_checkpoint (which is this with one rank whose pieces are whole tensors).
std::string save_checkpoint_sharded(const std::string& root, int64_t step, const std::vector<TensorPiece>& pieces,
                                    const std::vector<DatasetSpec>& datasets, const std::string& config_yaml,
                                    const nlohmann::json& meta, Retention retention, const ShardedSave& shard);

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
  int64_t format_version() const { return format_version_; }  // 0 for checkpoints older than the attribute
  int64_t world_size() const { return world_size_; }          // 0 if not recorded
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
  int64_t step_ = 0, format_version_ = 0, world_size_ = 0;
  long long file_ = -1;  // hid_t of state.h5
};

}  // namespace moe
