// `mpirun -np N moe bench comm`: bandwidth of Comm's collectives per message size, one JSON line
// each (rank 0 prints), reported the way NCCL's nccl-tests do:
//   bytes    all_gather: the gathered buffer; reduce_scatter: the input buffer; all_reduce: the
//            buffer; all_to_all: one rank's send buffer (equal counts to every rank)
//   algbw    bytes / time, time = mean over iterations of the slowest rank
//   busbw    algbw x the fraction of the data each rank must move, so that it compares with link
//            bandwidth whatever N is: all_gather, reduce_scatter, all_to_all (N-1)/N; all_reduce 2(N-1)/N
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "parallel/comm.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: mpirun -np N moe bench comm [--min-bytes B] [--max-bytes B] [--factor F] [--iters I]\n"
    "                                   [--warmup W] [--ops LIST]\n"
    "\n"
    "Times Comm's all_gather, reduce_scatter, all_reduce and all_to_all (all-to-all-v with equal counts)\n"
    "on f32 buffers from B_min to B_max bytes and prints one JSON line per (collective, size): bytes,\n"
    "time_us, algbw_GBps, busbw_GBps (nccl-tests conventions; see the top of launch/cmd_bench_comm.cpp).\n"
    "\n"
    "  --min-bytes B   smallest message, suffixes K, M, G allowed (default 4K)\n"
    "  --max-bytes B   largest message (default 64M)\n"
    "  --factor F      size multiplier between rows (default 4)\n"
    "  --iters I       timed iterations per row (default 20)\n"
    "  --warmup W      untimed iterations first (default 3)\n"
    "  --ops LIST      comma-separated subset of all_gather,reduce_scatter,all_reduce,all_to_all\n";

int64_t parse_bytes(const std::string& flag, const std::string& s) {
  size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
  }
  int64_t scale = 1;
  if (used + 1 == s.size()) {
    const char u = char(toupper(s[used]));
    scale = u == 'K' ? 1 << 10 : u == 'M' ? 1 << 20 : u == 'G' ? 1 << 30 : 0;
    used += scale != 0;
  }
  if (v < 1 || used != s.size()) throw error("--", flag, " '", s, "' (expected a positive byte count like 4096, 64K or 1G)");
  return v * scale;
}

struct Op {
  const char* name;
  double bus_factor;  // busbw / algbw for n ranks
  // Runs the collective once on a message of `bytes` (see the top of the file for what that is).
  std::function<void()> run;
};

}  // namespace

int cmd_bench_comm(int argc, char** argv) {
  Args a(argc, argv, {"min-bytes", "max-bytes", "factor", "iters", "warmup", "ops"}, {});
  if (a.help()) return fputs(kUsage, stdout), 0;
  if (!a.positional().empty()) throw error("moe bench comm: unexpected argument '", a.positional()[0], "' (see --help)");
  const int64_t min_bytes = parse_bytes("min-bytes", a.get("min-bytes", "4K"));
  const int64_t max_bytes = parse_bytes("max-bytes", a.get("max-bytes", "64M"));
  const long long factor = a.get_int("factor", 4), iters = a.get_int("iters", 20), warmup = a.get_int("warmup", 3);
  if (max_bytes < min_bytes) throw error("--max-bytes ", max_bytes, " is below --min-bytes ", min_bytes);
  if (factor < 2) throw error("--factor ", factor, " (expected >= 2)");
  if (iters < 1 || warmup < 0) throw error("--iters ", iters, " / --warmup ", warmup, " (expected >= 1 / >= 0)");
  std::vector<std::string> ops;
  for (std::string list = a.get("ops", "all_gather,reduce_scatter,all_reduce,all_to_all"); !list.empty();) {
    size_t comma = list.find(',');
    ops.push_back(list.substr(0, comma));
    list = comma == std::string::npos ? "" : list.substr(comma + 1);
  }

  Comm comm(nullptr, nullptr);
  const int n = comm.size();
  const double share = double(n - 1) / n;
  for (int64_t target = min_bytes; target <= max_bytes; target *= factor) {
    // Whole f32 elements for every rank: a multiple of 4 * n bytes (at least one element each).
    const int64_t per_rank = std::max<int64_t>(1, target / (4 * n)), total = per_rank * n;
    std::vector<float> big(total, 1.0f), big_out(total), small(per_rank, 1.0f);
    std::vector<int64_t> counts(n, per_rank), displs = packed_displacements(counts);
    const std::vector<Op> all = {
        {"all_gather", share, [&] { comm.allgather(small.data(), big_out.data(), per_rank); }},
        {"reduce_scatter", share, [&] { comm.reduce_scatter_sum(big.data(), small.data(), per_rank); }},
        {"all_reduce", 2 * share, [&] { comm.allreduce_sum(big_out.data(), total); }},
        {"all_to_all", share, [&] { comm.alltoallv(big.data(), counts, displs, big_out.data(), counts, displs); }},
    };
    for (const std::string& name : ops) {
      auto op = std::find_if(all.begin(), all.end(), [&](const Op& o) { return name == o.name; });
      if (op == all.end())
        throw error("--ops: unknown collective '", name, "' (expected all_gather, reduce_scatter, all_reduce or all_to_all)");
      for (long long i = 0; i < warmup; ++i) op->run();
      comm.barrier();
      auto t0 = std::chrono::steady_clock::now();
      for (long long i = 0; i < iters; ++i) op->run();
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(iters);
      std::vector<double> all_secs(n);
      comm.allgather_bytes(&secs, all_secs.data(), sizeof secs);
      secs = *std::max_element(all_secs.begin(), all_secs.end());
      if (!comm.is_root()) continue;
      const double bytes = double(total) * sizeof(float), algbw = bytes / secs / 1e9;
      nlohmann::json row = {{"bench", "comm"},
                            {"collective", op->name},
                            {"ranks", n},
                            {"bytes", int64_t(bytes)},
                            {"iters", iters},
                            {"time_us", std::round(secs * 1e7) / 10.0},
                            {"algbw_GBps", std::round(algbw * 1000) / 1000.0},
                            {"busbw_GBps", std::round(algbw * op->bus_factor * 1000) / 1000.0}};
      puts(row.dump().c_str());
      fflush(stdout);
    }
  }
  return 0;
}

}  // namespace moe
