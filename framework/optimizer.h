// The optimizer: AdamW with decoupled weight decay over the trainable segments of a flat f32
// parameter buffer, the squared-gradient sum that global-norm clipping needs, and the
// learning-rate schedules (linear warmup, then cosine / linear decay to min_lr, constant, or
// warmup-stable-decay: lr until the last decay_steps steps, then a linear / cosine / sqrt decay).
//
// It is model-agnostic math: it sees a flat buffer and runs of elements with or without decay,
// never a model. Its owners describe their buffer: ShardedModel (parallel/fsdp.h) an FSDP rank's
// shard, which is how `moe train` steps; model/params.h's trainable_segments() a single-process
// ParamStore. The moments are f32, laid out like the buffer, on the compute backend's device
// (framework/backend.h), where the parameters are.
#pragma once
#include <cstdint>
#include <vector>

#include "framework/config.h"
#include "framework/kernels/adamw.h"
#include "framework/tensor.h"

namespace moe {

// The schedule is a function of train.{schedule, steps, warmup, lr, min_lr, decay_steps, decay_shape}
// and the 0-based step only, so a run in pieces (train.stop_after, a resume) follows one curve.
double learning_rate(const TrainConfig& t, int64_t step);
// Whether a and b define the same learning-rate curve (the keys learning_rate() reads).
bool same_schedule(const TrainConfig& a, const TrainConfig& b);

// A run of trainable elements [begin, begin + n) of a flat buffer, all with or all without decay
// (none on norms and biases); the backend's AdamW takes them as they are.
using OptSegment = kern::AdamWSegment;

class AdamW {
 public:
  // Over a buffer of `numel` elements of which `segments` are trained.
  AdamW(int64_t numel, std::vector<OptSegment> segments, const TrainConfig& t);
  // One update with learning rate lr. grad_scale multiplies every gradient first (clipping).
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

}  // namespace moe
