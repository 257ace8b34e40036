#include "model/optimizer.h"

#include <cmath>

#include "framework/ops.h"
#include "framework/threads.h"

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step) {
  if (t.warmup > 0 && step < t.warmup) return t.lr * double(step + 1) / double(t.warmup);
  if (t.schedule == "constant") return t.lr;
  int64_t decay_steps = std::max<int64_t>(1, t.steps - t.warmup);
  double progress = std::min(1.0, double(step - t.warmup) / double(decay_steps));
  if (t.schedule == "linear") return t.lr + (t.min_lr - t.lr) * progress;
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
}

AdamW::AdamW(const ParamStore& ps, const TrainConfig& t)
    : m_(Tensor::zeros({ps.numel()})), v_(Tensor::zeros({ps.numel()})), beta1_(t.beta1), beta2_(t.beta2),
      eps_(t.eps), weight_decay_(t.weight_decay) {}

void AdamW::step(ParamStore& ps, double lr, float grad_scale) {
  ++t_;
  const float b1 = float(beta1_), b2 = float(beta2_), eps = float(eps_);
  const float bc1 = float(1.0 - std::pow(beta1_, double(t_))), bc2 = float(1.0 - std::pow(beta2_, double(t_)));
  const float step_size = float(lr) / bc1;
  float *w = ps.params(), *g = ps.grads(), *m = m_.f32(), *v = v_.f32();
  for (const ParamInfo& p : ps.infos()) {
    if (!p.trainable) continue;
    const int64_t o = p.offset, n = shape_numel(p.shape);
    const float decay = p.decay ? float(1.0 - lr * weight_decay_) : 1.f;
    parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = o + i0; i < o + i1; ++i) {
        float gi = g[i] * grad_scale;
        m[i] = b1 * m[i] + (1.f - b1) * gi;
        v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
        w[i] = w[i] * decay - step_size * m[i] / (std::sqrt(v[i] / bc2) + eps);
      }
    }, 1 << 14);
  }
}

double grad_norm(const ParamStore& ps) {
  double s = 0;
  for (const ParamInfo& p : ps.infos())
    if (p.trainable) s += sum_squares(ps.grads() + p.offset, shape_numel(p.shape));
  return std::sqrt(s);
}

}  // namespace moe
