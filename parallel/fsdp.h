// FSDP (ZeRO-3) for a DeepSeekV3 built with ModelPlacement{ep, ep_rank, own_storage = false}.
//
// Every parameter unit (model/params.h) is one flat buffer cut into g equal shards, g the size of
// the group that shares it: the replica (the world, without HSDP) for dense units, the dp group
// (ranks of the replica holding the same experts) for a routed-expert part. A rank keeps only its
// shard of each unit's parameters, gradients and AdamW moments: 1/(replica size) of the model,
// whatever ep is. With HSDP (parallel.dp_replicate R > 1) every replica holds the same shards, and
// finish_grads() all-reduces the shard-sized gradients across replicas (parallel/mesh.h). Around
// each use the model calls the UnitHooks below:
//   acquire       all-gather the unit (the next block's gather is posted ahead: prefetch)
//   release       free the gathered copy
//   acquire_grad  all-gather + a zeroed gradient buffer the backward accumulates into
//   release_grad  reduce-scatter the gradient buffer (posted; completed at the next release_grad
//                 or finish_grads()) and add this rank's part to its shard's gradient
// Units of a group of one (a single process, or experts with ep = world) are bound straight to
// their shard: no copies. Sums are rank-ordered (parallel/comm.h), so every layout of the same
// global batch trains the same model to float round-off. See docs/parallelism.md.
//
// Every buffer (shards, gathered units, gradient buffers) lives on the compute backend's device
// (framework/backend.h), and the gathers and reduce-scatters run through the CollectiveGroups of
// parallel/group.h: MPI on host memory, NCCL on GPUs. Checkpoints go through host_pieces(): on a
// device, a host copy of the state.
#pragma once
#include <deque>
#include <memory>
#include <vector>

#include "model/model.h"
#include "framework/optimizer.h"
#include "parallel/comm.h"
#include "parallel/group.h"
#include "parallel/mesh.h"

namespace moe {

// One rank's share of one parameter: elements [begin, end) of its flattened tensor, and where
// they sit in the rank's shard storage (exp_avg / exp_avg_sq null for non-trainable buffers).
struct ShardPiece {
  int param = -1;
  int64_t begin = 0, end = 0;
  float *value = nullptr, *exp_avg = nullptr, *exp_avg_sq = nullptr;
  bool replicated = false;  // every rank holds the same values (non-trainable buffers)
};

struct ShardMemory {
  int64_t shard_bytes = 0;       // parameters + gradients + AdamW moments this rank keeps
  int64_t peak_gathered_bytes = 0;  // largest gathered working set (parameters + gradient buffers)
  int64_t full_bytes = 0;        // the same state of the whole model in one process
};

class ShardedModel : public UnitHooks {
 public:
  // Binds itself as the model's unit hooks. shard_group (over the replica: mesh.shard_comm(), the
  // world without HSDP) and dp_group (over mesh.dp_comm(): the ranks of the replica holding the
  // same experts) run the collectives, and cross_group (mesh.cross_comm(); null without HSDP) the
  // gradient all-reduce across replicas; they and mesh must outlive it.
  ShardedModel(DeepSeekV3& model, const DeviceMesh& mesh, const TrainConfig& t, const CollectiveGroup& shard_group,
               const CollectiveGroup& dp_group, const CollectiveGroup* cross_group = nullptr);
  ~ShardedModel() override;
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  // Every shard from the model's initializer: the same values a single process starts from.
  void initialize(uint64_t seed);
  void zero_grads();
  // Completes the reduce-scatters still in flight (and, with HSDP, sums the gradients across
  // replicas); call after the last backward of a step.
  void finish_grads();
  // Global L2 norm of the gradients (one all-reduce over the replica, which holds each once).
  double grad_norm() const;
  void step(double lr, float grad_scale);
  AdamW& optimizer() { return *opt_; }

  // What this rank holds (pointers into the shard storage, on its device).
  std::vector<ShardPiece> pieces();
  // The same pieces in host memory, for checkpoints: on the CPU pieces() itself; on a device a
  // host copy of the state, downloaded by this call. After loading a checkpoint into them,
  // upload_host_pieces() puts the values on the device (nothing to do on the CPU).
  std::vector<ShardPiece> host_pieces();
  void upload_host_pieces();
  ShardMemory memory() const;

  // UnitHooks
  void acquire(int unit) override;
  void release(int unit) override;
  void prefetch(int unit) override;
  void acquire_grad(int unit) override;
  void release_grad(int unit) override;

 private:
  struct Shard {
    int unit = -1;
    const CollectiveGroup* group = nullptr;  // null: the whole unit is here (group of one)
    int g = 1, r = 0;             // group size, our rank in it
    int64_t size = 0;             // elements per rank; the unit padded to g * size
    int64_t offset = 0;           // into the shard storage
    Tensor full, full_grad;       // gathered copies while in use (at least g * size elements)
    Pending gathering;
    bool gathered = false;
  };
  struct PendingReduce {
    Pending req;
    Shard* shard = nullptr;
    Tensor grad, part;  // the full gradient being reduced and our part of the sum
  };

  Shard* shard_of(int unit);
  // Buffers of at least n elements on the compute device, pooled: gathers reuse them.
  Tensor take_buffer(int64_t n);
  void give_buffer(Tensor&& b, int64_t n);
  void complete_reduce();
  void count_gathered(int64_t delta);

  DeepSeekV3& model_;
  ParamStore& ps_;
  const Comm& replica_;  // shard_group's MPI Comm (host sums over one copy of the state)
  const CollectiveGroup* cross_ = nullptr;  // null: one replica
  const DeviceMesh& mesh_;
  std::vector<Shard> shards_;
  std::vector<int> shard_index_;  // by unit, -1 where this rank holds nothing
  Tensor params_, grads_;  // every shard back to back, on the compute device
  Tensor host_state_;      // [3, n] params, exp_avg, exp_avg_sq: host_pieces()' copy on a device
  std::unique_ptr<AdamW> opt_;
  std::deque<PendingReduce> reducing_;
  std::vector<Tensor> pool_;  // freed gather buffers, reused
  int64_t gathered_bytes_ = 0, peak_gathered_bytes_ = 0;
};

}  // namespace moe
