// AdamW with decoupled weight decay (none on norms and biases: ParamInfo::decay), global-norm
// gradient clipping, and the learning-rate schedules (linear warmup, then cosine / linear decay to
// min_lr, or constant). f32 master weights and moments live here; the flat layout matches the
// ParamStore so FSDP can give each rank a contiguous shard.
#pragma once
#include <cstdint>

#include "framework/config.h"
#include "model/params.h"

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step);  // step is 0-based

class AdamW {
 public:
  AdamW(const ParamStore& ps, const TrainConfig& t);
  // One update with learning rate lr. grad_scale multiplies every gradient first (clipping).
  void step(ParamStore& ps, double lr, float grad_scale);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }

 private:
  Tensor m_, v_;  // same flat layout as the ParamStore
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t t_ = 0;
};

// L2 norm of the trainable gradients, accumulated in f64 in a fixed order.
double grad_norm(const ParamStore& ps);

}  // namespace moe
