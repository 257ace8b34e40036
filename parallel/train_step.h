// One training step of one rank, the same for `moe train` (launch/trainer.cpp) and `moe bench
// train`: what happens between two optimizer updates, in the order that keeps every rank, every
// layout of the same global batch, and a checkpoint taken in the background consistent.
//
//   1. zero the gradients
//   2. per micro-batch a = 0 .. A-1: forward, backward with loss scale 1/(A·W) (A = grad_accum,
//      W = ranks), so the gradients summed over micro-batches and ranks are those of the mean
//      loss of the global batch; FSDP reduce-scatters each unit's gradient as its backward ends
//   3. finish_grads: the last reduce-scatters complete
//   4. all-reduce the losses, the top-1 hits and the expert loads over the world (the loads drive the bias update
//      and the log, and must be the same on every rank)
//   5. global grad norm, clip scale min(1, grad_clip / norm), lr from the schedule; the numeric
//      guard: a non-finite loss or grad norm on any rank (one all-reduce of a flag) skips 6, 7
//      and 9 on every rank, so the state (parameters, moments, optimizer step count, router
//      biases) is exactly what it was; the loads are reset all the same
//   6. before_update(): a checkpoint snapshot still copying the state in the background finishes
//      here — after the forward and backward, which read the state, and before the optimizer,
//      which changes it
//   7. AdamW step on this rank's shards
//   8. after_update(stats): the caller logs; this step's expert loads are still there
//   9. router bias update from the loads, which resets them: it comes after the log, and before
//      any forward of the next step or an evaluation, which route with the new bias
#pragma once
#include <cstdint>
#include <vector>

#include "framework/config.h"
#include "framework/function_ref.h"
#include "framework/tensor.h"
#include "parallel/distributed_model.h"

namespace moe {

// One micro-batch of this rank: [train.micro_batch, data.seq_len] token ids and their targets;
// with data.document_mask where each token's document starts in its window ([B*T], the model's
// doc_start); with data.mix each window's source ([B], 0..sources-1) for per-source losses.
struct MicroBatch {
  const int32_t* ids = nullptr;
  const int32_t* targets = nullptr;
  const int32_t* doc_start = nullptr;
  const int32_t* source = nullptr;
  int sources = 0;
};

struct StepStats {
  double loss = 0;        // mean cross-entropy over the global batch
  double aux_loss = 0;    // balance loss, mean over the global batch's micro-batches
  double z_loss = 0;      // router z-loss, the same
  double accuracy = 0;    // fraction of the global batch's tokens whose target was the top-1 logit
  double mtp_loss = 0;    // MTP cross-entropy (mean over modules), the same; 0 without MTP
  double local_loss = 0;  // mean cross-entropy of this rank's micro-batches only
  double grad_norm = 0;   // global L2 norm of the gradients, before clipping
  float clip_scale = 1;   // what the gradients were multiplied by (1: not clipped)
  double lr = 0;          // the schedule's learning rate for this step
  bool skipped = false;   // non-finite loss or grad norm on some rank: no update (step 5 above)
  // With MicroBatch::source: mean cross-entropy of each source's windows over the global batch
  // (NaN for a source without any this step).
  std::vector<double> source_loss;
  // Tokens per routed expert this step, [moe layers, routed experts], summed over micro-batches
  // and ranks: the model's own tensor, valid during after_update only (the bias update resets it).
  const Tensor* expert_load = nullptr;
};

// Faults a test injects into this rank's step (MOE_FAULT_INJECT, launch/numeric_guard.h): its
// loss reads NaN, or its gradients are NaN (the loss scale of its backward is NaN).
struct StepFault {
  bool nan_loss = false, nan_grad = false;
};

// Step `step` (0-based: it picks the learning rate). batch(step, a) gives micro-batch a, valid
// until the next call. cfg supplies train.{micro_batch, grad_accum, grad_clip, schedule},
// data.seq_len and model.router.bias_update_rate. Collective over dm's world. after_update runs
// on a skipped step too (StepStats::skipped), before_update only when the state is about to change.
StepStats train_step(DistributedModel& dm, const Config& cfg, int64_t step,
                     FunctionRef<MicroBatch(int64_t step, int micro)> batch, FunctionRef<void()> before_update,
                     FunctionRef<void(const StepStats&)> after_update, const StepFault& fault = {});

}  // namespace moe
