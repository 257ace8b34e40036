// The model as one rank of a training job holds it, built the same way by `moe train` and
// `moe bench train`: the dp × ep mesh, this rank's part of the model (its expert part, parameters
// bound unit by unit from FSDP shards, train.precision and train.recompute applied), the sharded
// state with its optimizer, and the all-to-all expert exchange when ep > 1. The parameters are not
// initialised yet: call fsdp.initialize(seed) or load a checkpoint into fsdp.pieces().
// parallel/train_step.h trains it, one optimizer step per call.
#pragma once
#include <memory>

#include "framework/config.h"
#include "model/model.h"
#include "parallel/comm.h"
#include "parallel/expert_exchange.h"
#include "parallel/fsdp.h"
#include "parallel/group.h"
#include "parallel/mesh.h"

namespace moe {

struct DistributedModel {
  // Collective over world. Throws moe::Error "<cfg.source>: parallel.ep ..." when parallel.ep does
  // not divide a replica (or parallel.dp_replicate the world size), on every rank before any
  // communication. `groups`
  // makes the collective groups for the compute device (parallel/group.h): MPI by default, NCCL
  // on GPUs (launch/device.h picks it).
  DistributedModel(const Comm& world, const Config& cfg, GroupFactory groups = &MpiGroup::make);
  DistributedModel(const DistributedModel&) = delete;
  DistributedModel& operator=(const DistributedModel&) = delete;

  const Comm& world;  // the job (host sums of the step's losses and expert loads)
  DeviceMesh mesh;
  // The collectives of world, mesh.dp_comm() and mesh.ep_comm() on the compute device; with HSDP
  // (parallel.dp_replicate > 1) also of mesh.shard_comm() and mesh.cross_comm() (null without).
  std::unique_ptr<CollectiveGroup> world_group, dp_group, ep_group, shard_group, cross_group;
  DeepSeekV3 model;
  ShardedModel fsdp;
  std::unique_ptr<AllToAllExchange> exchange;  // null when ep == 1
};

}  // namespace moe
