// `moe plan`: memory, communication and time of a config's training run on N devices (launch/plan.h).
#include <cstdio>
#include <optional>
#include <string>

#include "framework/error.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/plan.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe plan --config FILE.yaml --gpus N [--gpu h100|h800|h200|b200|cpu] [--gpus-per-node G]\n"
    "                [--set key=value]... [--global-batch SEQUENCES] [--best K] [--json] [--threads T]\n"
    "\n"
    "What training the config on N devices needs, before running it: parameters (total, active),\n"
    "memory per device (parameters, gradients, AdamW moments, gathered units, bf16/fp8 weight copies,\n"
    "activations with and without recompute, workspaces, comm buffers, the runtime, the expected\n"
    "peak), FLOPs per token, bytes per step per collective and link (inside a node / across nodes),\n"
    "a step time with the overlap the code does, tokens/s, MFU and GPU-hours per trillion tokens.\n"
    "The layout is the config's (parallel.dp_replicate, parallel.ep, train.micro_batch,\n"
    "train.grad_accum, train.recompute; change it with --set). Then the best K (default 5) layouts\n"
    "that fit, searched over dp_replicate, ep, micro-batch and recompute at the same global batch\n"
    "(default micro_batch x grad_accum x N sequences). --gpu cpu measures this machine instead of a\n"
    "table row (GEMMs at the model's shapes, the attention core, memory bandwidth). --json prints one\n"
    "JSON object. Device figures and what is modelled: docs/parallelism.md, \"moe plan\".\n";

std::string gib(int64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GiB", double(bytes) / 1073741824.0);
  return b;
}

void print_plan(const Plan& p, const DeviceSpec& dev) {
  const PlanLayout& L = p.layout;
  std::printf("layout: %d %s (%d per node): %d replica(s) x shard group %d (dp %d x ep %d), micro-batch %d x "
              "grad_accum %d, recompute %s, %s\n",
              L.gpus, dev.name.c_str(), L.gpus_per_node, L.replicas, L.replica_size(), L.dp(), L.ep, L.micro_batch,
              L.grad_accum, L.recompute ? "on" : "off", p.precision.c_str());
  std::printf("parameters: %.3fB total, %.3fB active per token; %.3g FLOP per token (training)\n",
              p.params_total / 1e9, p.params_active / 1e9, p.flops_per_token);
  std::printf("memory per device:\n");
  const struct {
    const char* what;
    int64_t bytes;
  } rows[] = {{"parameters (f32 master)", p.state_bytes / 4},
              {"gradients (f32)", p.state_bytes / 4},
              {"AdamW m and v (f32)", p.state_bytes / 2},
              {"gathered units (FSDP)", p.gathered_bytes},
              {"bf16/fp8 weight copies", p.lowp_weight_bytes},
              {L.recompute ? "activations (recompute)" : "activations", p.activation_bytes},
              {"workspace", p.workspace_bytes},
              {"all-to-all buffers", p.comm_buffer_bytes},
              {"runtime", p.runtime_bytes}};
  for (const auto& r : rows) std::printf("  %-26s %12s\n", r.what, gib(r.bytes).c_str());
  std::printf("  %-26s %12s of %.1f GiB: %s\n", "expected peak", gib(p.peak_bytes).c_str(), dev.hbm_gib,
              p.fits ? "fits" : "does NOT fit");
  std::printf("  (activations without recompute %s, with %s)\n", gib(p.activation_bytes_no_recompute).c_str(),
              gib(p.activation_bytes_recompute).c_str());
  std::printf("communication per step per device:\n");
  for (int k = 0; k < kCollectiveKinds; ++k) {
    const CommLine& c = p.comm[size_t(k)];
    if (!c.count.calls) continue;
    std::printf("  %-15s %6lld calls %12.4g B  (%s)  %.3f s\n", collective_name(CollectiveKind(k)),
                (long long)c.count.calls, double(c.count.bytes), c.inter_bytes > 0 ? "across nodes" : "inside a node",
                c.seconds);
  }
  std::printf("time per step: %.3f s (compute %.3f s, communication not hidden %.3f s); %.4g tokens/s, MFU %.1f%%, "
              "%.4g GPU-hours per trillion tokens\n",
              p.step_s, p.compute_s, p.exposed_comm_s, p.tokens_per_s, 100 * p.mfu, p.gpu_hours_per_trillion);
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  Args a(argc, argv, {"config", "set...", "gpus", "gpu", "gpus-per-node", "global-batch", "best", "threads"}, {"json"});
  if (a.help()) return std::fputs(kUsage, stdout), 0;
  const Config cfg = load_config(a.required("config"), a.all("set"));
  const long long gpus = a.get_int("gpus", 0);
  if (gpus < 1) throw error("--gpus: expected the number of devices (>= 1), got '", a.get("gpus"), "'");
  const std::string gpu = a.get("gpu", "h100");
  if (gpu == "cpu") set_num_threads(int(a.get_int("threads", cfg.train.threads)));
  const long long per_node = a.get_int("gpus-per-node", gpu == "cpu" ? gpus : 8);
  if (per_node < 1) throw error("--gpus-per-node: expected >= 1, got ", per_node);
  const int best = int(a.get_int("best", 5));
  if (best < 0) throw error("--best: expected >= 0, got ", best);
  const DeviceSpec dev = device_spec(gpu, cfg);

  PlanLayout L;
  L.gpus = int(gpus);
  L.gpus_per_node = int(per_node);
  L.replicas = cfg.parallel.dp_replicate;
  L.ep = cfg.parallel.ep;
  L.micro_batch = cfg.train.micro_batch;
  L.grad_accum = cfg.train.grad_accum;
  L.recompute = cfg.train.recompute;
  const int64_t global_batch = a.get_int("global-batch", int64_t(L.micro_batch) * L.grad_accum * L.gpus);
  if (global_batch < 1) throw error("--global-batch: expected >= 1 sequences, got ", global_batch);
  // The config's own layout may not suit this many devices (ep 64 on 8 GPUs); the search may
  // still find one, so that is said and the search goes on.
  std::optional<Plan> p;
  std::string layout_error;
  try {
    p = make_plan(cfg, L, dev);
  } catch (const Error& e) {
    if (best == 0) throw;
    layout_error = e.what();
  }
  const std::vector<Plan> found = best > 0 ? search_layouts(cfg, L.gpus, L.gpus_per_node, global_batch, dev, best)
                                           : std::vector<Plan>{};
  if (a.has("json")) {
    nlohmann::json j = p ? plan_json(*p) : nlohmann::json{{"layout_error", layout_error}};
    j["device"] = {{"name", dev.name}, {"bf16_tflops", dev.bf16_tflops}, {"fp8_tflops", dev.fp8_tflops},
                   {"hbm_gib", dev.hbm_gib}, {"hbm_gbps", dev.hbm_gbps}, {"intra_node_gbps", dev.intra_gbps},
                   {"inter_node_gbps", dev.inter_gbps}, {"source", dev.source}};
    j["config"] = cfg.source;
    j["best_layouts"] = nlohmann::json::array();
    for (const Plan& f : found) j["best_layouts"].push_back(plan_json(f));
    std::puts(j.dump().c_str());
    return 0;
  }
  std::printf("moe plan: %s on %lld x %s (%s)\n", cfg.source.c_str(), gpus, dev.name.c_str(), dev.source.c_str());
  if (p)
    print_plan(*p, dev);
  else
    std::printf("the config's layout: %s\n", layout_error.c_str());
  if (best > 0) {
    std::printf("\nbest layouts that fit, global batch %lld sequences:\n", (long long)global_batch);
    std::printf("  %-4s %-6s %-4s %-4s %-5s %-5s %-9s %-11s %-10s %-12s %-6s %s\n", "R", "shard", "ep", "mb", "accum",
                "recmp", "step s", "tokens/s", "peak GiB", "exposed comm", "MFU", "GPU-h/1T tokens");
    for (const Plan& f : found)
      std::printf("  %-4d %-6d %-4d %-4d %-5d %-5s %-9.3f %-11.4g %-10.1f %-12.3f %-6.1f %.4g\n", f.layout.replicas,
                  f.layout.replica_size(), f.layout.ep, f.layout.micro_batch, f.layout.grad_accum,
                  f.layout.recompute ? "on" : "off", f.step_s, f.tokens_per_s, double(f.peak_bytes) / 1073741824.0,
                  f.exposed_comm_s, 100 * f.mfu, f.gpu_hours_per_trillion);
    if (found.empty()) std::printf("  none: no layout of %lld devices fits this model at this batch\n", gpus);
  }
  return 0;
}

}  // namespace moe
