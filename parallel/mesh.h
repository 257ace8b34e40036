// DeviceMesh: the world as replicas × dp × ep, with one communicator along each axis.
//
// Layout, ep innermost, replicas outermost: world rank = replica * S + dp_rank * ep + ep_rank, with
// S = world / replicate ranks per replica (parallel.dp_replicate; 1 = one replica, plain FSDP).
//   - a replica (shard group) is S consecutive ranks: the state is sharded over its ranks and
//     replicated in every replica. Consecutive ranks share a node under mpirun/srun's default
//     placement, so with S = ranks per node the gathers and reduce-scatters stay inside a node and
//     only the shard-sized gradient all-reduce crosses nodes (HSDP).
//   - an ep group (ranks of one replica sharing dp_rank) is ep consecutive ranks; it holds all
//     routed experts between them (routed_experts/ep each) and exchanges tokens by all-to-all.
//   - a dp group (ranks of one replica sharing ep_rank) holds the same experts; those experts'
//     parameters are sharded over it and their gradients reduce-scattered.
//   - a cross-replica group (ranks with the same position in their replicas) holds the same shards
//     of everything, dense and expert alike; gradients are all-reduced over it.
// World 4: ep 1 -> ep groups {0} {1} {2} {3}, dp group {0,1,2,3};
//          ep 2 -> ep groups {0,1} {2,3},     dp groups {0,2} {1,3};
//          ep 4 -> ep group {0,1,2,3},         dp groups {0} {1} {2} {3}.
// World 4, dp_replicate 2: replicas {0,1} {2,3}, cross groups {0,2} {1,3}; with ep 1 dp groups
//          {0,1} {2,3}; with ep 2 ep groups {0,1} {2,3} and dp groups {0} {1} {2} {3}.
#pragma once
#include <string>

#include "parallel/comm.h"

namespace moe {

struct MeshCoords {
  int dp = 1, ep = 1;            // group sizes inside a replica: dp * ep = world / replicate
  int dp_rank = 0, ep_rank = 0;  // this rank's position along each axis
  int replicate = 1, replica = 0;  // number of replicas, and ours
  int shard_size() const { return dp * ep; }
  int shard_rank() const { return dp_rank * ep + ep_rank; }  // our position inside the replica
};

// Where `rank` sits in a world of `world` ranks with expert parallelism `ep` and `replicate`
// replicas. Throws moe::Error naming parallel.dp_replicate when it does not divide the world, and
// parallel.ep when ep does not divide a replica: the layout rules that need the world size. That ep
// divides model.routed_experts is config validation's (framework/config.cpp), with the file and
// line of the key.
MeshCoords mesh_coords(int world, int ep, int rank, int replicate = 1);

class DeviceMesh {
 public:
  // Collective over world (it splits it four times). An impossible layout is an error prefixed
  // with `where` (the config file), thrown by every rank before any collective.
  DeviceMesh(const Comm& world, int ep, const std::string& where = {}, int replicate = 1);

  int dp() const { return coords_.dp; }
  int ep() const { return coords_.ep; }
  int dp_rank() const { return coords_.dp_rank; }
  int ep_rank() const { return coords_.ep_rank; }
  int replicate() const { return coords_.replicate; }
  int replica() const { return coords_.replica; }
  const MeshCoords& coords() const { return coords_; }
  const Comm& dp_comm() const { return dp_comm_; }        // size dp, rank dp_rank
  const Comm& ep_comm() const { return ep_comm_; }        // size ep, rank ep_rank
  const Comm& shard_comm() const { return shard_comm_; }  // our replica: size dp * ep
  const Comm& cross_comm() const { return cross_comm_; }  // size replicate, rank replica

 private:
  MeshCoords coords_;
  Comm dp_comm_, ep_comm_, shard_comm_, cross_comm_;
};

}  // namespace moe
