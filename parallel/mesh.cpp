#include "parallel/mesh.h"

#include "framework/error.h"

namespace moe {

MeshCoords mesh_coords(int world, int ep, int rank, int replicate) {
  MOE_CHECK(world >= 1 && rank >= 0 && rank < world, "world ", world, " rank ", rank);
  if (replicate < 1 || world % replicate != 0)
    throw error("parallel.dp_replicate ", replicate, " does not divide world size ", world, " (expected a divisor of ",
                world, ")");
  const int S = world / replicate;
  if (ep < 1 || S % ep != 0) {
    if (replicate == 1)
      throw error("parallel.ep ", ep, " does not divide world size ", world, " (expected a divisor of ", world, ")");
    throw error("parallel.ep ", ep, " does not divide the ", S, " ranks of a replica (world size ", world,
                " / parallel.dp_replicate ", replicate, "; expected a divisor of ", S, ")");
  }
  const int local = rank % S;
  return MeshCoords{S / ep, ep, local / ep, local % ep, replicate, rank / S};
}

namespace {

MeshCoords coords_of(const Comm& world, int ep, int replicate, const std::string& where) {
  try {
    return mesh_coords(world.size(), ep, world.rank(), replicate);
  } catch (const Error& e) {
    if (where.empty()) throw;
    throw error(where, ": ", e.what());
  }
}

}  // namespace

DeviceMesh::DeviceMesh(const Comm& world, int ep, const std::string& where, int replicate)
    : coords_(coords_of(world, ep, replicate, where)),
      dp_comm_(world.split(coords_.replica * coords_.ep + coords_.ep_rank, coords_.dp_rank)),
      ep_comm_(world.split(coords_.replica * coords_.dp + coords_.dp_rank, coords_.ep_rank)),
      shard_comm_(world.split(coords_.replica, coords_.shard_rank())),
      cross_comm_(world.split(coords_.shard_rank(), coords_.replica)) {}

}  // namespace moe
