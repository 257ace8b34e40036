// AdamW with decoupled weight decay (none on norms and biases: ParamInfo::decay), global-norm
// gradient clipping, and the learning-rate schedules (linear warmup, then cosine / linear decay to
// min_lr, or constant). The moments are f32 and live here, laid out like the flat parameter buffer
// the optimizer is given: a ParamStore's, or an FSDP rank's shard (parallel/fsdp.h), described by
// segments of trainable elements. Moments and updates are on the compute backend's device
// (framework/backend.h), where the parameters are.
#pragma once
#include <cstdint>
#include <vector>

#include "framework/config.h"
#include "model/params.h"

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step);  // step is 0-based

// A run of trainable elements [begin, begin + n) of a flat buffer, all with or all without decay.
struct OptSegment {
  int64_t begin = 0, n = 0;
  bool decay = true;
};
// The trainable parameters of a ParamStore's flat buffer.
std::vector<OptSegment> trainable_segments(const ParamStore& ps);

class AdamW {
 public:
  AdamW(const ParamStore& ps, const TrainConfig& t);
  // Over a buffer of `numel` elements of which `segments` are trained.
  AdamW(int64_t numel, std::vector<OptSegment> segments, const TrainConfig& t);
  // One update with learning rate lr. grad_scale multiplies every gradient first (clipping).
  void step(ParamStore& ps, double lr, float grad_scale) { step(ps.params(), ps.grads(), lr, grad_scale); }
  void step(float* w, const float* g, double lr, float grad_scale);
  const std::vector<OptSegment>& segments() const { return segments_; }
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }

 private:
  Tensor m_, v_;  // same flat layout as the parameters
  std::vector<OptSegment> segments_;
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t t_ = 0;
};

// Sum of squares of g over the segments, in f64 in a fixed order.
double sum_squares(const float* g, const std::vector<OptSegment>& segments);
// L2 norm of the trainable gradients, accumulated in f64 in a fixed order.
double grad_norm(const ParamStore& ps);

}  // namespace moe
