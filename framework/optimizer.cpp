#include "framework/optimizer.h"

#include <cmath>

#include "framework/backend.h"

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step) {
  if (t.warmup > 0 && step < t.warmup) return t.lr * double(step + 1) / double(t.warmup);
  if (t.schedule == "constant") return t.lr;
  if (t.schedule == "wsd") {
    // Stable at lr until the last decay_steps steps; decay step k (1-based) is at progress
    // k / decay_steps, so the final step of the run trains at min_lr.
    const int64_t decay_start = t.steps - t.decay_steps;
    if (step < decay_start) return t.lr;
    const double progress = std::min(1.0, double(step - decay_start + 1) / double(std::max<int64_t>(1, t.decay_steps)));
    if (t.decay_shape == "cosine") return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
    if (t.decay_shape == "sqrt") return t.lr - (t.lr - t.min_lr) * std::sqrt(progress);
    return t.lr + (t.min_lr - t.lr) * progress;  // linear
  }
  int64_t decay_steps = std::max<int64_t>(1, t.steps - t.warmup);
  double progress = std::min(1.0, double(step - t.warmup) / double(decay_steps));
  if (t.schedule == "linear") return t.lr + (t.min_lr - t.lr) * progress;
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
}

bool same_schedule(const TrainConfig& a, const TrainConfig& b) {
  return a.schedule == b.schedule && a.steps == b.steps && a.warmup == b.warmup && a.lr == b.lr &&
         a.min_lr == b.min_lr && (a.schedule != "wsd" || (a.decay_steps == b.decay_steps && a.decay_shape == b.decay_shape));
}

AdamW::AdamW(int64_t numel, std::vector<OptSegment> segments, const TrainConfig& t)
    : m_(Tensor::zeros({numel}, DType::F32, compute().device())),
      v_(Tensor::zeros({numel}, DType::F32, compute().device())), segments_(std::move(segments)), beta1_(t.beta1),
      beta2_(t.beta2), eps_(t.eps), weight_decay_(t.weight_decay) {}

void AdamW::step(float* w, const float* g, double lr, float grad_scale) {
  ++t_;
  kern::AdamWStep st;
  st.beta1 = float(beta1_);
  st.beta2 = float(beta2_);
  st.eps = float(eps_);
  st.bc2 = float(1.0 - std::pow(beta2_, double(t_)));
  st.step_size = float(lr) / float(1.0 - std::pow(beta1_, double(t_)));
  st.grad_scale = grad_scale;
  st.decay = float(1.0 - lr * weight_decay_);
  // One call for all segments (one launch on the GPU).
  compute().adamw_update_segments(w, m_.f32(), v_.f32(), g, segments_.data(), int64_t(segments_.size()), st);
}

double sum_squares(const float* g, const std::vector<OptSegment>& segments) {
  double s = 0;
  std::vector<int64_t> begin, length;
  for (const OptSegment& sg : segments) begin.push_back(sg.begin), length.push_back(sg.n);
  s = compute().sum_squares_segments(g, begin.data(), length.data(), int64_t(segments.size()));
  return s;
}

}  // namespace moe
