#include "parallel/mesh.h"

#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "framework/error.h"

namespace moe {

namespace {

// "1, 2 or 4": the ep values that divide both the world and the expert count.
std::string valid_eps(int world, int routed_experts) {
  const int g = std::gcd(world, routed_experts);
  std::vector<int> eps;
  for (int d = 1; d <= g; ++d)
    if (g % d == 0) eps.push_back(d);
  std::ostringstream os;
  for (size_t i = 0; i < eps.size(); ++i) os << (i == 0 ? "" : i + 1 == eps.size() ? " or " : ", ") << eps[i];
  return os.str();
}

}  // namespace

MeshCoords mesh_coords(int world, int ep, int routed_experts, int rank) {
  MOE_CHECK(world >= 1 && rank >= 0 && rank < world && routed_experts >= 1, "world ", world, " rank ", rank,
            " routed_experts ", routed_experts);
  if (ep < 1 || world % ep != 0)
    throw error("parallel.ep ", ep, " does not divide world size ", world, " (expected a divisor of ", world, ")");
  if (routed_experts % ep != 0)
    throw error("model.routed_experts ", routed_experts, " not divisible by parallel.ep ", ep,
                " (expected a parallel.ep dividing both it and the world size ", world, ": ",
                valid_eps(world, routed_experts), ")");
  return MeshCoords{world / ep, ep, rank / ep, rank % ep};
}

DeviceMesh::DeviceMesh(const Comm& world, int ep, int routed_experts)
    : coords_(mesh_coords(world.size(), ep, routed_experts, world.rank())),
      dp_comm_(world.split(coords_.ep_rank, coords_.dp_rank)),
      ep_comm_(world.split(coords_.dp_rank, coords_.ep_rank)) {}

}  // namespace moe
