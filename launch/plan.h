// `moe plan`: what a training run of a config needs on a given cluster, before anyone runs it.
// Memory per rank, communication per step and a step time, from the model's own parameter
// registry (built without storage) and the same sharding rules parallel/fsdp.cpp applies, so the
// state and communication figures are the bytes the code will hold and send, not estimates:
//   - state: every unit cut into g equal shards padded to 16 floats, 16 B per element (f32
//     weight, gradient, AdamW m and v), g the unit's group (the replica for dense units, the dp
//     group for routed-expert parts, 1 for replicated buffers);
//   - communication per collective kind, counted as parallel/comm_stats.h counts it (groups of two
//     or more ranks; all-to-all bytes are the mean over ranks, exact for the sum: dropless routing
//     sends every routed copy, wherever it goes).
// Activations, working sets and time are models (docs/parallelism.md, "moe plan"), checked against
// measurements on this machine by tests/mpi/plan.sh and bench/plan_check.sh.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/config.h"
#include "parallel/comm_stats.h"

namespace moe {

// One accelerator kind (launch/plan_devices.cpp lists them with their sources).
struct DeviceSpec {
  std::string name;
  double bf16_tflops = 0, fp8_tflops = 0, fp32_tflops = 0;  // dense peak
  double gemm_efficiency = 0;       // fraction of peak large GEMMs reach (measured where known)
  double attention_efficiency = 0;  // fraction of the bf16 peak a fused (flash) attention reaches
  double hbm_gib = 0;           // memory per device
  double hbm_gbps = 0;          // memory bandwidth, GB/s
  double intra_gbps = 0;        // per-direction bandwidth to another device of the node, GB/s
  double inter_gbps = 0;        // per-direction bandwidth off the node (per device), GB/s
  double runtime_gib = 0;       // what the runtime holds before our first tensor (context, libraries)
  std::string source;
  // The CPU (`cpu`): measured on this machine at the config's shapes instead of peak x efficiency.
  double cpu_gemm_s_per_token = 0, cpu_f32_gemm_s_per_token = 0, cpu_attention_s_per_token = 0, cpu_other_s_per_token = 0;
  double cpu_adamw_s_per_element = 0;
};
// h100 | h800 | h200 | b200 | cpu (this machine, measured now: GEMM throughput at the model's
// shapes, memory bandwidth); moe::Error naming the choices otherwise.
DeviceSpec device_spec(const std::string& name, const Config& cfg);
std::vector<std::string> device_names();

struct PlanLayout {
  int gpus = 1, gpus_per_node = 8;
  int replicas = 1;  // parallel.dp_replicate
  int ep = 1;
  int micro_batch = 1, grad_accum = 1;
  bool recompute = false;
  int replica_size() const { return gpus / replicas; }
  int dp() const { return replica_size() / ep; }
};

struct CommLine {
  CollectiveCount count;           // per step per rank
  double intra_bytes = 0, inter_bytes = 0;  // of count.bytes: over NVLink (inside a node) / IB
  double seconds = 0;              // at the device's link bandwidths (ring algorithms)
};

struct Plan {
  PlanLayout layout;
  std::string precision;
  int64_t params_total = 0, params_active = 0;
  double flops_per_token = 0;
  int64_t tokens_per_step = 0;  // global
  // Memory per rank, bytes.
  int64_t state_bytes = 0;         // params + grads + AdamW m, v (exact)
  int64_t state_param_elements = 0;  // the shard's elements (one of the four)
  int64_t gathered_bytes = 0;      // FSDP's gathered units and gradient buffers at their peak
  int64_t lowp_weight_bytes = 0;   // bf16 / fp8 copies of the gathered weights
  int64_t activation_bytes = 0;    // saved for backward (with or without recompute)
  int64_t activation_bytes_no_recompute = 0, activation_bytes_recompute = 0;
  int64_t workspace_bytes = 0;     // one block's backward temporaries, the head's logits chunk
  int64_t comm_buffer_bytes = 0;   // all-to-all send/receive rows
  int64_t runtime_bytes = 0;       // the device's baseline
  int64_t peak_bytes = 0;
  bool fits = false;
  // Communication per step per rank, by kind (comm_stats order).
  std::vector<CommLine> comm;
  // Time per step, seconds.
  double compute_s = 0, exposed_comm_s = 0, step_s = 0;
  double gemm_s = 0, attention_s = 0, memory_s = 0;  // of compute_s (recompute included)
  double tokens_per_s = 0, mfu = 0, gpu_hours_per_trillion = 0;
};

// Whether block l (MTP modules after the main blocks) has routed experts.
bool is_moe_layer(const ModelConfig& m, int l);

// The plan of cfg (model, data.seq_len, train.precision) under one layout on `gpus` devices.
// Throws moe::Error when the layout is impossible (names which number does not divide which).
Plan make_plan(const Config& cfg, const PlanLayout& layout, const DeviceSpec& dev);
// Layouts for `gpus` devices keeping the global batch (sequences): replicas, ep, micro-batch and
// recompute over their possible values; the plans that fit, fastest first (at most `best`).
std::vector<Plan> search_layouts(const Config& cfg, int gpus, int gpus_per_node, int64_t global_batch,
                                 const DeviceSpec& dev, int best);

nlohmann::json plan_json(const Plan& p);

}  // namespace moe
