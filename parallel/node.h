// Where the ranks run: node names and node-local ranks (docs/parallelism.md, "Multi-node launch").
//
// A node is a machine, told apart by its host name (MPI_Get_processor_name), as Open MPI and Slurm
// tell them apart. The trainer prints each rank's node and local rank at startup, and with HSDP
// (parallel.dp_replicate) whether each replica's shard group is inside one node, which is what
// keeps its gathers and reduce-scatters off the network. The GPU process group (nccl_comm.h) picks
// a rank's GPU by its local rank. CPU-only: the moe binary and every build have it.
#pragma once
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace moe {

// This process's rank among the ranks of the job on its node: OMPI_COMM_WORLD_LOCAL_RANK (mpirun),
// else SLURM_LOCALID (srun), else MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) over `comm`
// (collective in that case). `local_size` (when not null) gets the number of such ranks (0:
// unknown).
int local_rank(const Comm& comm, int* local_size = nullptr);

// Every rank's node name, in rank order, on every rank (collective over `comm`).
std::vector<std::string> node_names(const Comm& comm);

// The nodes that each replica's shard group runs on, given every world rank's node name: replica r
// is ranks [r*S, (r+1)*S) with S = names.size() / replicate (parallel/mesh.h). Each list names a
// node once, in rank order. A replica is inside one node when its list has one name.
std::vector<std::vector<std::string>> replica_nodes(const std::vector<std::string>& names, int replicate);

// Rank 0's lines on where HSDP's shard groups run, given every rank's node name: with every replica
// inside one node, "HSDP: each replica's shard group is inside one node (replica 0 on node-a,
// replica 1 on node-b)"; else a warning for each replica that spans nodes (the first 4, then how
// many more), naming the fix. None when replicate is 1.
std::vector<std::string> replica_placement(const std::vector<std::string>& names, int replicate);

// The number of distinct node names.
int count_nodes(const std::vector<std::string>& names);

}  // namespace moe
