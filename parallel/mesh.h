// DeviceMesh: the world as a dp × ep grid, with one communicator along each axis.
//
// Layout, ep innermost: world rank = dp_rank * ep + ep_rank.
//   - an ep group (ranks sharing dp_rank) is ep consecutive ranks {dp_rank*ep, ..., dp_rank*ep + ep-1};
//     it holds all routed experts between them (routed_experts/ep each) and exchanges tokens by
//     all-to-all. Consecutive ranks share a node under mpirun/srun's default placement, so the
//     latency-bound all-to-all stays inside a node when ep <= ranks per node.
//   - a dp group (ranks sharing ep_rank) is {ep_rank, ep_rank + ep, ep_rank + 2ep, ...}: the ranks
//     holding the same experts, over which those experts' parameters are sharded and their gradients
//     reduce-scattered. Parameters sharded over every rank use the world Comm itself.
// World 4: ep 1 -> ep groups {0} {1} {2} {3}, dp group {0,1,2,3};
//          ep 2 -> ep groups {0,1} {2,3},     dp groups {0,2} {1,3};
//          ep 4 -> ep group {0,1,2,3},         dp groups {0} {1} {2} {3}.
#pragma once
#include <string>

#include "parallel/comm.h"

namespace moe {

struct MeshCoords {
  int dp = 1, ep = 1;            // group sizes: dp * ep = world
  int dp_rank = 0, ep_rank = 0;  // this rank's position along each axis
};

// Where `rank` sits in a world of `world` ranks with expert parallelism `ep`. Throws moe::Error
// naming parallel.ep when ep does not divide the world: the one layout rule that needs the world
// size. That ep divides model.routed_experts is config validation's (framework/config.cpp), with
// the file and line of the key.
MeshCoords mesh_coords(int world, int ep, int rank);

class DeviceMesh {
 public:
  // Collective over world (it splits it twice). An impossible ep is an error prefixed with `where`
  // (the config file), thrown by every rank before any collective.
  DeviceMesh(const Comm& world, int ep, const std::string& where = {});

  int dp() const { return coords_.dp; }
  int ep() const { return coords_.ep; }
  int dp_rank() const { return coords_.dp_rank; }
  int ep_rank() const { return coords_.ep_rank; }
  const Comm& dp_comm() const { return dp_comm_; }  // size dp, rank dp_rank
  const Comm& ep_comm() const { return ep_comm_; }  // size ep, rank ep_rank

 private:
  MeshCoords coords_;
  Comm dp_comm_, ep_comm_;
};

}  // namespace moe
