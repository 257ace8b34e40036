#include "parallel/train_step.h"

#include <cmath>

#include "framework/bf16_weights.h"
#include "framework/optimizer.h"
#include "framework/profiler.h"

namespace moe {
namespace {

// Adds each window's summed token losses and token count to its source's entries of
// by_source [sources losses | sources tokens].
void add_source_losses(const DeepSeekV3& model, const MicroBatch& mb, int B, int T, std::vector<double>& by_source) {
  by_source.resize(size_t(2 * mb.sources), 0.0);
  const std::vector<float> losses = model.token_losses();
  for (int b = 0; b < B; ++b) {
    double sum = 0;
    for (int t = 0; t < T; ++t) sum += losses[size_t(b * T + t)];
    by_source[size_t(mb.source[b])] += sum;
    by_source[size_t(mb.sources + mb.source[b])] += T;
  }
}

}  // namespace

StepStats train_step(DistributedModel& dm, const Config& cfg, int64_t step,
                     FunctionRef<MicroBatch(int64_t step, int micro)> batch, FunctionRef<void()> before_update,
                     FunctionRef<void(const StepStats&)> after_update, const StepFault& fault) {
  const TrainConfig& t = cfg.train;
  const int B = t.micro_batch, T = cfg.data.seq_len, A = t.grad_accum, W = dm.world.size();
  DeepSeekV3& model = dm.model;
  ShardedModel& fsdp = dm.fsdp;

  fsdp.zero_grads();
  model.set_mtp_loss_weight(mtp_loss_weight_at(cfg.model, step));
  double losses[5] = {0, 0, 0, 0, 0};  // ce, aux, z, top-1 hits, mtp summed over micro-batches
  std::vector<double> by_source;         // per source: sum of token losses, then tokens
  {
    // The weights hold still until the optimizer: bf16 GEMMs round each matrix once for all
    // micro-batches' forwards and backwards.
    const Bf16WeightScope weights_held;
    for (int a = 0; a < A; ++a) {
      const MicroBatch mb = batch(step, a);
      const ForwardStats s = model.forward(mb.ids, mb.targets, B, T, /*count_load=*/true, mb.doc_start);
      if (mb.source) add_source_losses(model, mb, B, T, by_source);
      model.backward(fault.nan_grad && a == 0 ? std::nanf("") : 1.f / float(A * W));
      losses[0] += s.loss;
      losses[1] += s.aux_loss;
      losses[2] += s.z_loss;
      losses[3] += s.top1_hits;
      losses[4] += s.mtp_loss;
    }
  }
  fsdp.finish_grads();
  if (fault.nan_loss) losses[0] = std::nan("");

  StepStats st;
  st.local_loss = losses[0] / A;
  Tensor& load = model.expert_load();
  {
    MOE_PHASE("optimizer");
    dm.world.allreduce_sum(losses, 5);
    if (!by_source.empty()) dm.world.allreduce_sum(by_source.data(), int(by_source.size()));
    dm.world.allreduce_sum(load.f32(), load.numel());
    st.grad_norm = fsdp.grad_norm();
    // The sums above are bitwise the same on every rank, but the decision to skip must be too
    // whatever a rank saw locally, so it is agreed explicitly.
    double bad = std::isfinite(st.local_loss) && std::isfinite(losses[0]) && std::isfinite(st.grad_norm) ? 0 : 1;
    dm.world.allreduce_sum(&bad, 1);
    st.skipped = bad > 0;
  }
  const size_t S = by_source.size() / 2;
  for (size_t k = 0; k < S; ++k)
    st.source_loss.push_back(by_source[S + k] > 0 ? by_source[k] / by_source[S + k] : std::nan(""));
  st.loss = losses[0] / (A * W);
  st.aux_loss = losses[1] / (A * W);
  st.z_loss = losses[2] / (A * W);
  st.accuracy = losses[3] / (double(A) * W * B * T);
  st.mtp_loss = losses[4] / (A * W);
  st.clip_scale = (t.grad_clip > 0 && st.grad_norm > t.grad_clip) ? float(t.grad_clip / st.grad_norm) : 1.f;
  st.lr = learning_rate(t, step);
  st.expert_load = &load;
  if (st.skipped) {
    after_update(st);
    load.zero_();  // what the bias update would have done, without moving the biases
    st.expert_load = nullptr;
    return st;
  }

  before_update();
  {
    MOE_PHASE("optimizer");
    fsdp.step(st.lr, st.clip_scale);
  }
  after_update(st);
  {
    MOE_PHASE("optimizer");
    model.update_router_bias(float(cfg.model.router.bias_update_rate));
  }
  st.expert_load = nullptr;
  return st;
}

}  // namespace moe
