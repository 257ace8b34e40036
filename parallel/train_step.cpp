#include "parallel/train_step.h"

#include "framework/optimizer.h"
#include "framework/profiler.h"

namespace moe {

StepStats train_step(DistributedModel& dm, const Config& cfg, int64_t step,
                     FunctionRef<MicroBatch(int64_t step, int micro)> batch, FunctionRef<void()> before_update,
                     FunctionRef<void(const StepStats&)> after_update) {
  const TrainConfig& t = cfg.train;
  const int B = t.micro_batch, T = cfg.data.seq_len, A = t.grad_accum, W = dm.world.size();
  DeepSeekV3& model = dm.model;
  ShardedModel& fsdp = dm.fsdp;

  fsdp.zero_grads();
  model.set_mtp_loss_weight(mtp_loss_weight_at(cfg.model, step));
  double losses[4] = {0, 0, 0, 0};  // ce, aux, z, mtp summed over micro-batches
  for (int a = 0; a < A; ++a) {
    const MicroBatch mb = batch(step, a);
    const ForwardStats s = model.forward(mb.ids, mb.targets, B, T);
    model.backward(1.f / float(A * W));
    losses[0] += s.loss;
    losses[1] += s.aux_loss;
    losses[2] += s.z_loss;
    losses[3] += s.mtp_loss;
  }
  fsdp.finish_grads();

  StepStats st;
  st.local_loss = losses[0] / A;
  Tensor& load = model.expert_load();
  {
    MOE_PHASE("optimizer");
    dm.world.allreduce_sum(losses, 4);
    dm.world.allreduce_sum(load.f32(), load.numel());
    st.grad_norm = fsdp.grad_norm();
  }
  st.loss = losses[0] / (A * W);
  st.aux_loss = losses[1] / (A * W);
  st.z_loss = losses[2] / (A * W);
  st.mtp_loss = losses[3] / (A * W);
  st.clip_scale = (t.grad_clip > 0 && st.grad_norm > t.grad_clip) ? float(t.grad_clip / st.grad_norm) : 1.f;
  st.lr = learning_rate(t, step);
  st.expert_load = &load;

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
