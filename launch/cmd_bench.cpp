// `moe bench <what>`: benchmarks that print one JSON line per result (never assertions).
//   train      training steps of a config on random tokens: tokens/s, step time, peak memory and
//              where the time goes (per-phase split from framework/profiler.h)
//   gemm       f32 / bf16 GEMM throughput at a config's shapes (cmd_bench_gemm.cpp)
//   comm       collective bandwidth over MPI ranks (cmd_bench_comm.cpp)
//   tokenizer  encode throughput (cmd_bench_tokenizer.cpp)
//   checkpoint save/load speed and the training stall per save (cmd_bench_checkpoint.cpp)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/config.h"
#include "framework/error.h"
#include "framework/metrics.h"
#include "framework/profiler.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/gemm_peak.h"
#include "model/model.h"
#include "parallel/comm_stats.h"
#include "parallel/distributed_model.h"
#include "parallel/train_step.h"

namespace moe {
namespace {

int bench_train(int argc, char** argv) {
  Args a(argc, argv, {"config", "set...", "steps", "warmup", "threads", "device"}, {});
  if (a.help()) {
    puts("usage: moe bench train --config FILE.yaml [--set key=value]... [--steps N] [--warmup W] [--threads T]\n"
         "                       [--device auto|cpu|cuda]\n"
         "\n"
         "Times N training steps (after W untimed warm-up steps) of the config's model on random tokens:\n"
         "the step of `moe train` (train.grad_accum micro-batches of [train.micro_batch, data.seq_len] per\n"
         "rank, grad-norm clipping, the lr schedule, AdamW, the router bias update). Prints one JSON line:\n"
         "tokens_per_s (all ranks), step_ms, peak_rss_mib (peak_device_mib and mfu_vs_989 on a GPU),\n"
         "activation_mib (what one micro-batch keeps for backward), gflops, the per-phase time split and\n"
         "attention (the attention core that ran: cpu core, cudnn fused or gemm on a GPU).\n"
         "--device overrides the config's device key.\n"
         "Under mpirun it trains as `moe train` does (FSDP, parallel.ep experts per group), so the cost of\n"
         "sharding and dispatch shows next to a single-process run.");
    return 0;
  }
  Config cfg = load_config(a.required("config"), a.all("set"));
  const int64_t steps = a.get_int("steps", 10), warmup = a.get_int("warmup", 2);
  if (steps < 1) throw error("--steps: ", steps, " (expected >= 1)");
  if (warmup < 0) throw error("--warmup: ", warmup, " (expected >= 0)");
  set_num_threads(int(a.get_int("threads", cfg.train.threads)));
  const int64_t B = cfg.train.micro_batch, T = cfg.data.seq_len, V = cfg.model.vocab_size, A = cfg.train.grad_accum;

  Comm comm(nullptr, nullptr);
  DeviceChoice device = a.has("device") ? choose_device(a.get("device"), "--device", &comm)
                                        : choose_device(cfg, &comm);
  ComputeScope on_device(*device.backend);
  DistributedModel dm(comm, cfg, device.groups);
  dm.fsdp.initialize(cfg.run.seed);
  const int W = comm.size();
  // Random tokens, a different [B, T] batch for each micro-batch, laid out as `moe train` draws
  // them: micro-batch a of rank r is global sample (a·W + r)·B. The same batches every step.
  std::vector<int32_t> ids(size_t(A * B * T)), tgt(size_t(A * B * T));
  for (int64_t m = 0; m < A; ++m)
    for (int64_t i = 0; i < B * T; ++i) {
      uint64_t at = uint64_t(m * W + comm.rank()) * uint64_t(B * T) + uint64_t(i);
      ids[m * B * T + i] = int32_t(rng_bits(cfg.run.seed, 1, at) % uint64_t(V));
      tgt[m * B * T + i] = int32_t(rng_bits(cfg.run.seed, 2, at) % uint64_t(V));
    }
  // data.document_mask: every sequence packs four documents of T/4 tokens (the last takes the rest).
  std::vector<int32_t> doc_start;
  const int64_t doc = std::max<int64_t>(T / 4, 1);
  if (cfg.data.document_mask)
    for (int64_t i = 0; i < B * T; ++i) doc_start.push_back(int32_t(std::min(i % T / doc, int64_t(3)) * doc));
  auto batch = [&](int64_t, int micro) {
    MicroBatch mb{&ids[micro * B * T], &tgt[micro * B * T]};
    if (!doc_start.empty()) mb.doc_start = doc_start.data();
    return mb;
  };
  auto no_snapshot = [] {};
  auto no_log = [](const StepStats&) {};
  // The schedule runs on over the warm-up and timed steps, as if they were a run's first steps.
  int64_t step = 0;
  StepStats last;
  auto run_steps = [&](int64_t n) {
    for (int64_t end = step + n; step < end; ++step) last = train_step(dm, cfg, step, batch, no_snapshot, no_log);
  };
  run_steps(warmup);
  Profiler::reset();
  reset_comm_counts();
  auto t0 = std::chrono::steady_clock::now();
  run_steps(steps);
  const CommCounts comm_counted = comm_counts();
  // Every rank's counts summed (after the timed steps, so this sum is not counted): the all-to-all
  // bytes vary by rank with the routing, their mean over ranks does not (what `moe plan` predicts).
  std::vector<double> counted_sum;
  for (const CollectiveCount& c : comm_counted) counted_sum.insert(counted_sum.end(), {double(c.calls), double(c.bytes)});
  comm.allreduce_sum(counted_sum.data(), int64_t(counted_sum.size()));
  nlohmann::json comm_mean = nlohmann::json::object();
  for (int k = 0; k < kCollectiveKinds; ++k)
    comm_mean[collective_name(CollectiveKind(k))] = {{"calls", counted_sum[2 * k] / W / steps},
                                                     {"bytes", counted_sum[2 * k + 1] / W / steps}};
  compute().synchronize();
  comm.barrier();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double tps = double(A * B * T * steps) * W / secs;
  ParamCounts pc = count_params(cfg.model);
  nlohmann::json phases;
  for (auto& [name, s] : Profiler::seconds()) phases[name] = std::round(1000.0 * s / secs) / 1000.0;
  const double flops = tps * flops_per_token(cfg.model, T);
  // rank 0's saved activations of one micro-batch (DeepSeekV3::activation_bytes)
  const int64_t activation_bytes = dm.model.activation_bytes();
  nlohmann::json out = {{"bench", "train"},
                        {"config", cfg.source},
                        {"device", device.description},
                        {"precision", precision_name(dm.model.precision())},
                        {"precision_detail", precision_label(dm.model.precision(), device)},
                        {"attention", attention_label(device)},
                        {"ranks", W},
                        {"ep", dm.mesh.ep()},
                        {"threads", num_threads()},
                        {"params", pc.total},
                        {"active_params", pc.active},
                        {"batch", B},
                        {"grad_accum", A},
                        {"seq_len", T},
                        {"steps", steps},
                        {"tokens_per_s", std::round(tps)},
                        {"step_ms", std::round(10000.0 * secs / steps) / 10.0},
                        {"gflops", std::round(10.0 * flops / 1e9) / 10.0},
                        {"tflops", std::round(10.0 * flops / 1e12) / 10.0},  // as torch_ref.py prints it
                        {"state_mib_per_rank", std::round(dm.fsdp.memory().shard_bytes / 1048576.0 * 10) / 10},
                        {"state_bytes_per_rank", dm.fsdp.memory().shard_bytes},
                        {"gathered_peak_bytes", dm.fsdp.memory().peak_gathered_bytes},
                        {"peak_rss_mib", std::round(peak_rss_mib())},
                        {"activation_mib", std::round(activation_bytes / 1048576.0 * 10) / 10},
                        {"activation_bytes", activation_bytes},
                        {"peak_device_mib", std::round(device_peak_mib(device))},
                        {"loss", last.loss},
                        {"grad_norm", last.grad_norm},
                        {"time_split", phases},
                        // rank 0's collectives per step (parallel/comm_stats.h)
                        {"comm_per_step", comm_counts_json(comm_counted, steps)},
                        {"comm_per_step_rank_mean", comm_mean}};
  // The same MFU as bench/torch_ref.py: against 989 TFLOP/s (H100 dense bf16) on a GPU.
  if (device.peak_flops > 0) {
    out["mfu_vs_989"] = std::round(1000.0 * flops / device.peak_flops) / 1000.0;
  } else {  // the CPU: model FLOPs against a 1024^3 GEMM in the precision the GEMMs run (moe bench gemm)
    const double ceiling = cpu_peak_gflops(dm.model.precision());
    out["gemm_ceiling_gflops"] = std::round(ceiling * 10) / 10;
    out["mfu_vs_gemm_ceiling"] = std::round(1000.0 * flops / W / 1e9 / ceiling) / 1000.0;  // per rank
  }
  if (comm.is_root()) puts(out.dump().c_str());
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  const char* usage =
      "usage: moe bench <train|gemm|generate|comm|tokenizer|checkpoint> [flags]   (moe bench <what> --help for its flags)\n"
      "  train       training throughput of a config on random tokens, with the per-phase time split\n"
      "  gemm        f32 and bf16 GEMM GFLOP/s at a config's shapes and at 1024^3 (the ceilings)\n"
      "  generate    decoding tokens/s with the latent KV cache against the no-cache path, at several batch sizes\n"
      "  comm        all-gather / reduce-scatter / all-reduce / all-to-all-v bandwidth (under mpirun)\n"
      "  tokenizer   encode throughput of a tokenizer on a file\n"
      "  checkpoint  save / load GB/s and the training stall per save";
  if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
    puts(usage);
    return argc < 1 ? 2 : 0;
  }
  std::string what = argv[0];
  if (what == "train") return bench_train(argc - 1, argv + 1);
  if (what == "gemm") return cmd_bench_gemm(argc - 1, argv + 1);
  if (what == "generate") return cmd_bench_generate(argc - 1, argv + 1);
  if (what == "comm") return cmd_bench_comm(argc - 1, argv + 1);
  if (what == "tokenizer") return cmd_bench_tokenizer(argc - 1, argv + 1);
  if (what == "checkpoint") return cmd_bench_checkpoint(argc - 1, argv + 1);
  throw error("moe bench: unknown benchmark '", what, "' (expected train, gemm, generate, comm, tokenizer or checkpoint)");
}

}  // namespace moe
