// `moe bench gemm --config C`: f32 and bf16 GEMM throughput at the shapes of the config's model
// (each linear layer's forward, dgrad and wgrad at one micro-batch of tokens; the routed experts at
// their mean rows per expert) and at 1024^3, the machine's ceilings. One JSON line per shape, then
// a summary; `moe bench train` divides its GEMM FLOPs by the same ceiling.
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/bf16_gemm.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/gemm_peak.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe bench gemm --config FILE.yaml [--set key=value]... [--threads T] [--trials N]\n"
    "\n"
    "GEMM throughput (GFLOP/s, best of N trials) in f32 (OpenBLAS) and bf16 (oneDNN on AVX512-BF16,\n"
    "or the emulation where the CPU lacks it) at the model's shapes: for every linear layer\n"
    "y[M,out] = x[M,in] W^T its forward, dgrad dx = dy W and wgrad dW = dy^T x, M = micro_batch x\n"
    "seq_len tokens (routed experts: their mean rows, M x experts_per_token / routed_experts). One\n"
    "JSON line per shape, then {\"ceiling\": ...} with a 1024^3 GEMM in each precision.\n";

struct Layer {
  std::string name;
  int64_t rows, in, out;
};

std::vector<Layer> layers_of(const ModelConfig& m, int64_t tokens) {
  const int64_t D = m.hidden, H = m.heads, qk = m.qk_nope_dim + m.qk_rope_dim;
  std::vector<Layer> v;
  if (m.q_lora_rank > 0) {
    v.push_back({"q_a_proj", tokens, D, m.q_lora_rank});
    v.push_back({"q_b_proj", tokens, m.q_lora_rank, H * qk});
  } else {
    v.push_back({"q_proj", tokens, D, H * qk});
  }
  v.push_back({"kv_a_proj_with_mqa", tokens, D, m.kv_lora_rank + m.qk_rope_dim});
  v.push_back({"kv_b_proj", tokens, m.kv_lora_rank, H * (m.qk_nope_dim + m.v_head_dim)});
  v.push_back({"o_proj", tokens, H * m.v_head_dim, D});
  if (m.dense_layers > 0) {
    v.push_back({"dense.up_proj", tokens, D, m.dense_inter});
    v.push_back({"dense.down_proj", tokens, m.dense_inter, D});
  }
  if (m.routed_experts > 0) {
    const int64_t rows = std::max<int64_t>(1, tokens * m.experts_per_token / m.routed_experts);
    v.push_back({"expert.up_proj", rows, D, m.expert_inter});
    v.push_back({"expert.down_proj", rows, m.expert_inter, D});
  }
  v.push_back({"lm_head", tokens, D, m.vocab_size});
  return v;
}

}  // namespace

int cmd_bench_gemm(int argc, char** argv) {
  Args a(argc, argv, {"config", "set...", "threads", "trials"}, {});
  if (a.help()) return std::fputs(kUsage, stdout), 0;
  const Config cfg = load_config(a.required("config"), a.all("set"));
  set_num_threads(int(a.get_int("threads", cfg.train.threads)));
  const int trials = int(a.get_int("trials", 3));
  if (trials < 1) throw error("--trials: ", trials, " (expected >= 1)");
  const int64_t tokens = int64_t(cfg.train.micro_batch) * cfg.data.seq_len;
  struct Op {
    const char* name;
    bool ta, tb;
  };
  const Op ops[] = {{"forward", false, true}, {"dgrad", false, false}, {"wgrad", true, false}};
  for (const Layer& l : layers_of(cfg.model, tokens))
    for (const Op& op : ops) {
      // forward [rows,in]x[out,in]^T; dgrad [rows,out]x[out,in]; wgrad [rows,out]^T x [rows,in].
      const int64_t M = op.ta ? l.out : l.rows, N = op.tb ? l.out : l.in, K = op.ta ? l.rows : (op.tb ? l.in : l.out);
      const double f32 = gemm_gflops(false, op.ta, op.tb, M, N, K, trials);
      const double bf16 = gemm_gflops(true, op.ta, op.tb, M, N, K, trials);
      nlohmann::json row = {{"layer", l.name}, {"op", op.name}, {"M", M}, {"N", N}, {"K", K},
                            {"f32_gflops", std::round(f32 * 10) / 10}, {"bf16_gflops", std::round(bf16 * 10) / 10},
                            {"bf16_vs_f32", std::round(100 * bf16 / f32) / 100}};
      std::puts(row.dump().c_str());
    }
  const double f32 = cpu_peak_gflops(Precision::FP32), bf16 = cpu_peak_gflops(Precision::BF16);
  nlohmann::json summary = {{"ceiling", {{"shape", "1024x1024x1024"},
                                         {"f32_gflops", std::round(f32 * 10) / 10},
                                         {"bf16_gflops", std::round(bf16 * 10) / 10},
                                         {"bf16_gemm", bf16_gemm_backend()},
                                         {"threads", num_threads()}}}};
  std::puts(summary.dump().c_str());
  return 0;
}

}  // namespace moe
