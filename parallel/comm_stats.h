// What this process has communicated: calls and bytes per collective kind, counted where the
// collectives are posted (parallel/comm.h for MPI, parallel/nccl_comm.h for NCCL), so every user —
// FSDP's gathers and reduce-scatters, the expert all-to-all, the step's host all-reduces — is
// seen. Only groups of two or more ranks count (a world of one communicates nothing).
//
// Bytes are the collective's payload as nccl-tests sizes it, independent of the algorithm:
//   all_gather      the gathered buffer (n elements x group size)
//   reduce_scatter  the input buffer (n elements x group size)
//   all_reduce      the buffer (n elements)
//   all_to_all_v    what this rank sends, its own share included (the dispatch's count exchange too)
//   broadcast       the buffer
// Process-wide, from the thread that runs the collectives; read and reset between steps.
#pragma once
#include <array>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace moe {

enum class CollectiveKind : int { AllGather, ReduceScatter, AllReduce, AllToAllV, Broadcast };
constexpr int kCollectiveKinds = 5;
// "all_gather", "reduce_scatter", "all_reduce", "all_to_all_v", "broadcast"
const char* collective_name(CollectiveKind k);

struct CollectiveCount {
  int64_t calls = 0, bytes = 0;
};
using CommCounts = std::array<CollectiveCount, kCollectiveKinds>;

void count_collective(CollectiveKind k, int64_t bytes);
// Counts since the last reset.
CommCounts comm_counts();
void reset_comm_counts();
// {"all_gather": {"calls": c, "bytes": b}, ...} for every kind, each figure divided by `per`
// (the steps the counts cover; bytes may then be fractional, the all-to-all's vary with routing).
nlohmann::json comm_counts_json(const CommCounts& counts, int64_t per = 1);

}  // namespace moe
