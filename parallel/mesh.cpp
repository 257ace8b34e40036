#include "parallel/mesh.h"

#include "framework/error.h"

namespace moe {

MeshCoords mesh_coords(int world, int ep, int rank) {
  MOE_CHECK(world >= 1 && rank >= 0 && rank < world, "world ", world, " rank ", rank);
  if (ep < 1 || world % ep != 0)
    throw error("parallel.ep ", ep, " does not divide world size ", world, " (expected a divisor of ", world, ")");
  return MeshCoords{world / ep, ep, rank / ep, rank % ep};
}

namespace {

MeshCoords coords_of(const Comm& world, int ep, const std::string& where) {
  try {
    return mesh_coords(world.size(), ep, world.rank());
  } catch (const Error& e) {
    if (where.empty()) throw;
    throw error(where, ": ", e.what());
  }
}

}  // namespace

DeviceMesh::DeviceMesh(const Comm& world, int ep, const std::string& where)
    : coords_(coords_of(world, ep, where)),
      dp_comm_(world.split(coords_.ep_rank, coords_.dp_rank)),
      ep_comm_(world.split(coords_.dp_rank, coords_.ep_rank)) {}

}  // namespace moe
