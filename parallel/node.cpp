#include "parallel/node.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "parallel/mesh.h"
#include "parallel/mpi_util.h"

namespace moe {

namespace {

// A non-negative integer from the environment, or -1.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end != v && x >= 0 ? int(x) : -1;  // SLURM_TASKS_PER_NODE "4(x2)" reads as 4
}

}  // namespace

int local_rank(const Comm& comm, int* local_size) {
  int rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK"), size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (rank < 0) rank = env_int("SLURM_LOCALID"), size = env_int("SLURM_TASKS_PER_NODE");
  if (rank < 0) {
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(comm.native(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &rank));
    MPI_CHECK(MPI_Comm_size(node, &size));
    MPI_Comm_free(&node);
  }
  if (local_size) *local_size = size > 0 ? size : 0;  // 0: unknown
  return rank;
}

std::vector<std::string> node_names(const Comm& comm) {
  // Fixed-size slots, so one all-gather carries every name (MPI_MAX_PROCESSOR_NAME is 256 bytes).
  constexpr int kSlot = MPI_MAX_PROCESSOR_NAME;
  std::vector<char> mine(kSlot, '\0'), all(size_t(kSlot) * size_t(comm.size()));
  int len = 0;
  MPI_CHECK(MPI_Get_processor_name(mine.data(), &len));
  comm.allgather_bytes(mine.data(), all.data(), kSlot);
  std::vector<std::string> names;
  for (int r = 0; r < comm.size(); ++r) {
    const char* s = all.data() + size_t(r) * kSlot;
    names.emplace_back(s, strnlen(s, kSlot));
  }
  return names;
}

std::vector<std::vector<std::string>> replica_nodes(const std::vector<std::string>& names, int replicate) {
  const int world = int(names.size());
  std::vector<std::vector<std::string>> out(size_t(std::max(replicate, 1)));
  for (int r = 0; r < world; ++r) {
    auto& nodes = out[size_t(mesh_coords(world, 1, r, replicate).replica)];
    if (std::find(nodes.begin(), nodes.end(), names[size_t(r)]) == nodes.end()) nodes.push_back(names[size_t(r)]);
  }
  return out;
}

int count_nodes(const std::vector<std::string>& names) {
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  return int(std::unique(sorted.begin(), sorted.end()) - sorted.begin());
}

std::vector<std::string> replica_placement(const std::vector<std::string>& names, int replicate) {
  if (replicate <= 1) return {};
  constexpr int kShown = 4;  // replicas (and nodes of one replica) named before "..."
  const auto groups = replica_nodes(names, replicate);
  std::vector<std::string> lines;
  std::string inside;
  int spanning = 0;
  for (int r = 0; r < replicate; ++r) {
    const auto& nodes = groups[size_t(r)];
    if (nodes.size() == 1) {
      if (r < kShown) inside += (r ? ", replica " : "replica ") + std::to_string(r) + " on " + nodes[0];
      continue;
    }
    if (++spanning > kShown) continue;
    std::string list;
    for (size_t i = 0; i < nodes.size() && i < size_t(kShown); ++i) list += (i ? ", " : "") + nodes[i];
    if (nodes.size() > size_t(kShown)) list += " and " + std::to_string(nodes.size() - kShown) + " more";
    // Its all-gathers and reduce-scatters (every micro-batch) then cross the network, which HSDP
    // exists to avoid; consecutive ranks fill a node first, so R = a multiple of the nodes fits.
    lines.push_back("warning: HSDP shard group of replica " + std::to_string(r) + " spans nodes " + list +
                    ": its all-gathers and reduce-scatters cross nodes; set parallel.dp_replicate to a multiple "
                    "of the node count (" + std::to_string(count_nodes(names)) + ", with as many ranks on each node)");
  }
  if (spanning > kShown)
    lines.push_back("warning: " + std::to_string(spanning - kShown) + " more HSDP shard group(s) span nodes");
  if (spanning == 0)
    lines.push_back("HSDP: each replica's shard group is inside one node (" + inside +
                    (replicate > kShown ? ", ..." : "") + ")");
  return lines;
}

}  // namespace moe
