// ParamStore: every parameter of a model, grouped into units, with a twin buffer for gradients.
// Modules hold parameter ids and look the values up at use time (param(id), grad(id)). Names are
// Hugging Face DeepseekV3 names.
//
// Units are what FSDP shards and gathers as one flat buffer: the embedding, each block's dense
// part (norms, attention, router weight, shared experts), each block's routed experts (split into
// `expert parts`, one per expert-parallel rank), and the head. Non-trainable buffers (the router's
// e_score_correction_bias) go to one replicated unit every process holds whole.
//
// Two ways to get storage:
//   - allocate(): one flat buffer, units back to back (a single process; eval, generation, tests),
//     on the device of the compute backend (framework/backend.h). params()/grads() and
//     ParamInfo::offset address it.
//   - allocate_unbound(): no storage; an owner (parallel/fsdp) binds each unit's data and gradient
//     buffers while it is in use. param(id) of an unbound unit is a programming error (checked).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/optimizer.h"
#include "framework/tensor.h"

namespace moe {

enum class Init { Normal, Ones, Zeros };

enum class UnitKind {
  Sharded,     // split over every rank
  Expert,      // one part of a layer's routed experts, split over the ranks holding that part
  Replicated,  // held whole by every rank (non-trainable buffers)
};

struct ParamInfo {
  std::string name;
  Shape shape;
  int unit = 0;
  int64_t unit_offset = 0;  // into the unit's buffer
  int64_t offset = 0;       // into the flat buffer of allocate() (its layout also names checkpoint order)
  Init init = Init::Normal;
  float init_std = 0.02f;
  bool decay = true;       // AdamW weight decay (off for norms and biases)
  bool trainable = true;   // false for buffers such as the router's e_score_correction_bias
};

struct ParamUnit {
  std::string name;
  UnitKind kind = UnitKind::Sharded;
  int expert_part = -1;       // for Expert units: which part of the layer's experts
  int64_t numel = 0;          // padded: every parameter starts 64-byte aligned
  int64_t offset = 0;         // into the flat buffer of allocate()
  std::vector<int> params;
  float* data = nullptr;      // bound storage, numel floats (or null)
  float* grad = nullptr;
};

class ParamStore {
 public:
  // Later add() calls go to a new unit. Parameters added before any begin_unit go to a unit "main".
  int begin_unit(const std::string& name, UnitKind kind = UnitKind::Sharded, int expert_part = -1);
  // Registers a parameter in the current unit (non-trainable ones: in the replicated unit).
  int add(const std::string& name, const Shape& shape, Init init, float init_std = 0.f, bool decay = true,
          bool trainable = true);
  void allocate();
  void allocate_unbound();
  // Fills every parameter from the counter-based RNG: value i of parameter p depends only on
  // (seed, p's name, i), so a shard can be filled on its own (init_values) with the same numbers.
  void initialize(uint64_t seed);
  // Initial values [begin, end) of parameter id (elements of its flattened tensor) into out.
  void init_values(int id, int64_t begin, int64_t end, float* out, uint64_t seed) const;

  Tensor param(int id) const;
  Tensor grad(int id) const;
  const std::vector<ParamInfo>& infos() const { return infos_; }
  const std::vector<ParamUnit>& units() const { return units_; }
  void bind(int unit, float* data, float* grad);
  int find(const std::string& name) const;  // -1 if absent
  int64_t numel() const { return total_; }
  int64_t trainable_numel() const;
  // Where the parameters live: allocate()'s device; bound storage is host memory.
  Device device() const { return device_; }
  // The flat buffers of allocate() (null after allocate_unbound()).
  float* params() const { return flat_ ? params_.f32() : nullptr; }
  float* grads() const { return flat_ ? grads_.f32() : nullptr; }
  void zero_grads() { if (flat_) grads_.zero_(); }

 private:
  void layout();

  std::vector<ParamInfo> infos_;
  std::vector<ParamUnit> units_;
  int current_unit_ = -1, replicated_unit_ = -1;
  int64_t total_ = 0;
  bool allocated_ = false, flat_ = false;
  Device device_ = Device::CPU;
  Tensor params_, grads_;
};

// The trainable parameters of an allocate()d store's flat buffer, as the optimizer takes them
// (framework/optimizer.h): AdamW opt(ps.numel(), trainable_segments(ps), t).
std::vector<OptSegment> trainable_segments(const ParamStore& ps);
// L2 norm of the trainable gradients, accumulated in f64 in a fixed order.
double grad_norm(const ParamStore& ps);

}  // namespace moe
