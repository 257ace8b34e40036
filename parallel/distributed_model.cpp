#include "parallel/distributed_model.h"

#include "framework/precision.h"

namespace moe {

DistributedModel::DistributedModel(const Comm& world, const Config& cfg, GroupFactory groups)
    : world(world),
      mesh(world, cfg.parallel.ep, cfg.source, cfg.parallel.dp_replicate),
      world_group(groups(world)),
      dp_group(groups(mesh.dp_comm())),
      ep_group(groups(mesh.ep_comm())),
      shard_group(mesh.replicate() > 1 ? groups(mesh.shard_comm()) : nullptr),
      cross_group(mesh.replicate() > 1 ? groups(mesh.cross_comm()) : nullptr),
      model(cfg.model, ModelPlacement{mesh.ep(), mesh.ep_rank(), /*own_storage=*/false}),
      fsdp(model, mesh, cfg.train, shard_group ? *shard_group : *world_group, *dp_group, cross_group.get()) {
  model.set_recompute(cfg.train.recompute);
  model.set_precision(parse_precision(cfg.train.precision));
  model.set_fp8_dispatch(cfg.parallel.fp8_dispatch);
  if (mesh.ep() > 1) {
    exchange = std::make_unique<AllToAllExchange>(*ep_group);
    model.set_expert_exchange(exchange.get());
  }
}

}  // namespace moe
