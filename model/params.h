// ParamStore: every parameter of a model in one flat f32 buffer, with a twin buffer for gradients.
// Modules hold Tensor views into it; the optimizer, gradient clipping, data-parallel reductions and
// FSDP sharding see one contiguous range. Names are Hugging Face DeepseekV3 names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/tensor.h"

namespace moe {

enum class Init { Normal, Ones, Zeros };

struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // into the flat buffers
  Init init = Init::Normal;
  float init_std = 0.02f;
  bool decay = true;       // AdamW weight decay (off for norms and biases)
  bool trainable = true;   // false for buffers such as the router's e_score_correction_bias
};

class ParamStore {
 public:
  // Registers a parameter; views are valid after allocate().
  int add(const std::string& name, const Shape& shape, Init init, float init_std = 0.f, bool decay = true,
          bool trainable = true);
  void allocate();
  // Fills every parameter from the counter-based RNG: value i of parameter p depends only on
  // (seed, p's name, i).
  void initialize(uint64_t seed);

  Tensor param(int id) const;
  Tensor grad(int id) const;
  const std::vector<ParamInfo>& infos() const { return infos_; }
  int find(const std::string& name) const;  // -1 if absent
  int64_t numel() const { return total_; }
  int64_t trainable_numel() const;
  float* params() const { return params_.f32(); }
  float* grads() const { return grads_.f32(); }
  void zero_grads() { grads_.zero_(); }

 private:
  std::vector<ParamInfo> infos_;
  int64_t total_ = 0;
  bool allocated_ = false;
  Tensor params_, grads_;
};

}  // namespace moe
