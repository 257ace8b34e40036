#include "parallel/comm_stats.h"

#include <atomic>

namespace moe {
namespace {

struct Counters {
  std::atomic<int64_t> calls[kCollectiveKinds] = {}, bytes[kCollectiveKinds] = {};
};

Counters& counters() {
  static Counters c;
  return c;
}

}  // namespace

const char* collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::AllGather: return "all_gather";
    case CollectiveKind::ReduceScatter: return "reduce_scatter";
    case CollectiveKind::AllReduce: return "all_reduce";
    case CollectiveKind::AllToAllV: return "all_to_all_v";
    case CollectiveKind::Broadcast: return "broadcast";
  }
  return "?";
}

void count_collective(CollectiveKind k, int64_t bytes) {
  Counters& c = counters();
  c.calls[int(k)].fetch_add(1, std::memory_order_relaxed);
  c.bytes[int(k)].fetch_add(bytes, std::memory_order_relaxed);
}

CommCounts comm_counts() {
  Counters& c = counters();
  CommCounts out;
  for (int k = 0; k < kCollectiveKinds; ++k) {
    out[size_t(k)].calls = c.calls[k].load(std::memory_order_relaxed);
    out[size_t(k)].bytes = c.bytes[k].load(std::memory_order_relaxed);
  }
  return out;
}

nlohmann::json comm_counts_json(const CommCounts& counts, int64_t per) {
  nlohmann::json out = nlohmann::json::object();
  for (int k = 0; k < kCollectiveKinds; ++k) {
    const CollectiveCount& c = counts[size_t(k)];
    if (per == 1)
      out[collective_name(CollectiveKind(k))] = {{"calls", c.calls}, {"bytes", c.bytes}};
    else
      out[collective_name(CollectiveKind(k))] = {{"calls", double(c.calls) / double(per)},
                                                 {"bytes", double(c.bytes) / double(per)}};
  }
  return out;
}

void reset_comm_counts() {
  Counters& c = counters();
  for (int k = 0; k < kCollectiveKinds; ++k) {
    c.calls[k].store(0, std::memory_order_relaxed);
    c.bytes[k].store(0, std::memory_order_relaxed);
  }
}

}  // namespace moe
