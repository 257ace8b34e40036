// The device table of `moe plan`, and this CPU measured in place of a table row.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include "framework/attention.h"
#include "framework/backend.h"
#include "framework/kernels/adamw.h"
#include "framework/bf16_gemm.h"
#include "framework/error.h"
#include "framework/threads.h"
#include "launch/gemm_peak.h"
#include "launch/plan.h"

namespace moe {

namespace {

// Peak dense throughput from the vendors' datasheets (without sparsity); links per direction.
// gemm_efficiency: cuBLASLt bf16 at 4096^3 measured 895 of 989 TFLOP/s on an H100 (docs/cuda.md);
// the same fraction is assumed for the other Hopper parts and for fp8, and 0.8 for Blackwell (not
// measured). attention_efficiency: FlashAttention-3's forward+backward at head dims 128-256 on an
// H100 (arXiv 2407.08608: ~600 TFLOP/s forward, ~450 backward at bf16), about half of peak.
// runtime_gib: CUDA context, cuBLAS/cuDNN workspaces and NCCL's buffers before our first tensor.
// H800: DeepSeek-V3's own figures for its cluster (arXiv 2412.19437 section 3.2.2: NVLink 160 GB/s
// and InfiniBand 50 GB/s per GPU achieved), the same SXM5 compute as the H100.
const std::vector<DeviceSpec>& table() {
  static const std::vector<DeviceSpec> t = {
      {"h100", 989.4, 1978.9, 66.9, 0.905, 0.5, 79.6, 3350, 450, 50, 1.0,
       "NVIDIA H100 SXM5 datasheet; NVLink 4 900 GB/s both ways; 400 Gb/s NDR InfiniBand per GPU"},
      {"h800", 989.4, 1978.9, 66.9, 0.905, 0.5, 79.6, 3350, 160, 50, 1.0,
       "H100 SXM5 compute; links as DeepSeek-V3 reports them (arXiv 2412.19437, 3.2.2)"},
      {"h200", 989.4, 1978.9, 66.9, 0.905, 0.5, 140.4, 4800, 450, 50, 1.0,
       "NVIDIA H200 SXM datasheet (141 GB HBM3e, 4.8 TB/s); NVLink 4; 400 Gb/s NDR per GPU"},
      {"b200", 2250, 4500, 75, 0.8, 0.5, 167.6, 7700, 900, 100, 1.0,
       "NVIDIA HGX B200 datasheet (180 GB HBM3e, 7.7 TB/s); NVLink 5 1.8 TB/s both ways; 800 Gb/s per GPU; "
       "efficiencies assumed, not measured"},
  };
  return t;
}

double seconds_of(const std::function<void()>& f, int trials) {
  using Clock = std::chrono::steady_clock;
  f();  // untimed: first-touch, primitive creation
  double best = 1e30;
  for (int t = 0; t < trials; ++t) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Bytes read + written per second by a large copy, with the pool's threads.
double copy_gbps() {
  const int64_t n = int64_t(1) << 24;  // 64 MiB of floats each way
  std::vector<float> a(size_t(n), 1.f), b(size_t(n), 0.f);
  const double s = seconds_of([&] {
    parallel_for(n, [&](int64_t lo, int64_t hi) { std::memcpy(b.data() + lo, a.data() + lo, size_t(hi - lo) * 4); });
  }, 3);
  return 2.0 * double(n) * 4 / s / 1e9;
}

// Seconds per token of every GEMM of a training step (forward, dgrad, wgrad), each timed at its
// own shape as `moe bench gemm` times it but with operands from memory, at one micro-batch of tokens: the blocks' GEMMs in the
// step's precision, and the f32 ones (router, lm_head).
std::pair<double, double> gemm_seconds_per_token(const ModelConfig& m, int64_t tokens, bool bf16) {
  struct G {
    int64_t rows, in, out;
    double count;  // how many such GEMMs the model runs per micro-batch
  };
  const int64_t D = m.hidden, H = m.heads, dq = m.qk_nope_dim + m.qk_rope_dim;
  const double blocks = m.layers + m.mtp_depth;
  int moe_blocks = 0;
  for (int l = 0; l < m.layers + m.mtp_depth; ++l) moe_blocks += is_moe_layer(m, l);
  // The router and lm_head run in f32 whatever the precision (model/router.cpp, model.cpp); the
  // head in chunks of 1024 rows, its forward again in backward (4 GEMMs).
  struct G32 {
    int64_t rows, in, out;
    double count;
    bool twice_forward;
  };
  std::vector<G32> f32s;
  if (moe_blocks > 0) f32s.push_back({tokens, D, m.routed_experts, double(moe_blocks), false});
  f32s.push_back({std::min<int64_t>(tokens, 1024), D, m.vocab_size, (1.0 + m.mtp_depth) * double(tokens) / std::min<int64_t>(tokens, 1024), true});
  std::vector<G> gs;
  if (m.q_lora_rank > 0) {
    gs.push_back({tokens, D, m.q_lora_rank, blocks});
    gs.push_back({tokens, m.q_lora_rank, H * dq, blocks});
  } else {
    gs.push_back({tokens, D, H * dq, blocks});
  }
  gs.push_back({tokens, D, m.kv_lora_rank + m.qk_rope_dim, blocks});
  gs.push_back({tokens, m.kv_lora_rank, H * (m.qk_nope_dim + m.v_head_dim), blocks});
  gs.push_back({tokens, H * m.v_head_dim, D, blocks});
  if (blocks - moe_blocks > 0) {
    gs.push_back({tokens, D, m.dense_inter, 2 * (blocks - moe_blocks)});
    gs.push_back({tokens, m.dense_inter, D, blocks - moe_blocks});
  }
  if (moe_blocks > 0) {
    const int64_t rows = std::max<int64_t>(1, tokens * m.experts_per_token / m.routed_experts);
    const int64_t shared = int64_t(m.expert_inter) * m.shared_experts;
    if (shared > 0) {
      gs.push_back({tokens, D, shared, 2.0 * moe_blocks});
      gs.push_back({tokens, shared, D, double(moe_blocks)});
    }
    gs.push_back({rows, D, m.expert_inter, 2.0 * moe_blocks * m.routed_experts});
    gs.push_back({rows, m.expert_inter, D, double(moe_blocks) * m.routed_experts});
  }
  if (m.mtp_depth > 0) gs.push_back({tokens, 2 * D, D, double(m.mtp_depth)});
  // forward [rows,in]x[out,in]^T; dgrad [rows,out]x[out,in]; wgrad [rows,out]^T x [rows,in]
  auto seconds = [](bool lowp, int64_t rows, int64_t in, int64_t out, double forwards) {
    const double flops = 2.0 * double(rows) * double(in) * double(out) / 1e9;
    return flops * (forwards / gemm_gflops(lowp, false, true, rows, out, in, 2, true) +
                    1 / gemm_gflops(lowp, false, false, rows, in, out, 2, true) +
                    1 / gemm_gflops(lowp, true, false, out, in, rows, 2, true));
  };
  double blocks_s = 0, f32_s = 0;
  for (const G& g : gs) blocks_s += g.count * seconds(bf16, g.rows, g.in, g.out, 1);
  for (const G32& g : f32s) f32_s += g.count * seconds(false, g.rows, g.in, g.out, g.twice_forward ? 2 : 1);
  return {blocks_s / double(tokens), f32_s / double(tokens)};
}

// Seconds per token of the attention core (forward + backward) of every block, timed on one
// sequence at the config's shapes.
double attention_seconds_per_token(const ModelConfig& m, int64_t T, bool bf16) {
  AttentionLayout l;
  l.B = 1, l.T = T, l.H = m.heads, l.dqk = m.qk_nope_dim + m.qk_rope_dim, l.dv = m.v_head_dim;
  l.q_ld = l.k_ld = l.H * l.dqk, l.q_hs = l.k_hs = l.dqk;
  l.v_ld = l.o_ld = l.H * l.dv, l.v_hs = l.o_hs = l.dv;
  l.scale = 1.f / std::sqrt(float(l.dqk));
  l.bf16 = bf16;
  const size_t nq = size_t(T * l.H * l.dqk), nv = size_t(T * l.H * l.dv);
  std::vector<float> q(nq, 0.01f), k(nq, 0.02f), v(nv, 0.5f), o(nv), dout(nv, 1e-3f), dq(nq), dk(nq), dv(nv),
      lse(size_t(l.H * T));
  const double s = seconds_of([&] {
    attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), l);
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), lse.data(), l);
  }, 2);
  return s * (m.layers + m.mtp_depth) / double(T);
}

// Seconds per element of the step's memory-bound kernels, timed through the compute backend on
// rows of the model's width: RMSNorm forward + backward, SwiGLU forward + backward, bf16 rounding,
// an add, and AdamW.
struct ElementRates {
  double norm = 0, swiglu = 0, round = 0, add = 0;
  double adamw = 0;          // per parameter: AdamW, the gradient's sum of squares and zeroing
  double entropy = 0;        // per logit: cross entropy forward + backward
  double route = 0;          // per routed copy element: permute, unpermute and their backward
};

ElementRates element_rates(int64_t tokens, int64_t D, int64_t V, int64_t K) {
  Backend& be = compute();
  const int64_t n = tokens * D;
  std::vector<float> x(size_t(n), 0.5f), y(size_t(n), 0.f), z(size_t(n), 0.25f), dx(size_t(n), 0.f),
      du(size_t(n), 0.f), w(size_t(D), 1.f), dw(size_t(D), 0.f), rstd(size_t(tokens), 0.f);
  ElementRates r;
  r.norm = seconds_of([&] {
    be.rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), tokens, D, 1e-6f);
    be.rmsnorm_backward(dx.data(), dw.data(), z.data(), x.data(), w.data(), rstd.data(), tokens, D, false);
  }, 3) / double(n);
  r.swiglu = seconds_of([&] {
    be.swiglu_forward(y.data(), x.data(), z.data(), n);
    be.swiglu_backward(dx.data(), du.data(), z.data(), x.data(), z.data(), n);
  }, 3) / double(n);
  r.round = seconds_of([&] { be.bf16_round(y.data(), x.data(), n); }, 3) / double(n);
  r.add = seconds_of([&] { be.add(y.data(), x.data(), z.data(), n); }, 3) / double(n);
  {
    // The optimizer's buffers are the model's, out of cache: 4M elements each.
    const int64_t p = int64_t(1) << 22;
    std::vector<float> w4(size_t(p), 0.5f), m4(size_t(p), 0.f), v4(size_t(p), 0.f), g4(size_t(p), 1e-3f);
    kern::AdamWStep step;
    step.step_size = 1e-3f;
    r.adamw = seconds_of([&] {
      be.adamw_update(w4.data(), m4.data(), v4.data(), g4.data(), p, step);
      volatile double ss = be.sum_squares(g4.data(), p);
      (void)ss;
      be.zero(g4.data(), size_t(p) * sizeof(float));
    }, 3) / double(p);
  }
  {
    const int64_t rows = std::min<int64_t>(tokens, 1024);
    std::vector<float> logits(size_t(rows * V), 0.01f), dlogits(size_t(rows * V), 0.f), losses(size_t(rows), 0.f),
        lse(size_t(rows), 0.f);
    std::vector<int32_t> targets(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) targets[size_t(i)] = int32_t(i % V);
    r.entropy = seconds_of([&] {
      be.cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), rows, V);
      be.cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), 1.f, rows, V);
    }, 3) / double(rows * V);
  }
  {
    // Copies in a scattered order, as routing makes them: slot p holds token (p * 7919) mod N.
    const int64_t P = tokens * K;
    std::vector<int32_t> slot_of(static_cast<size_t>(P)), pos_of(static_cast<size_t>(P));
    for (int64_t p = 0; p < P; ++p) {
      const int64_t slot = (p * 7919) % P;
      slot_of[size_t(p)] = int32_t(slot);
      pos_of[size_t(slot)] = int32_t(p);
    }
    std::vector<float> xs(size_t(P * D), 0.f), ys(size_t(P * D), 0.5f), dys(size_t(P * D), 0.f), wk(size_t(P), 0.5f),
        dwk(size_t(P), 0.f);
    r.route = seconds_of([&] {
      be.moe_permute(xs.data(), x.data(), slot_of.data(), P, K, D);
      be.moe_unpermute(y.data(), ys.data(), pos_of.data(), wk.data(), tokens, K, D, false);
      be.moe_unpermute_backward(dwk.data(), dys.data(), z.data(), ys.data(), pos_of.data(), wk.data(), tokens, K, D);
      be.moe_permute_backward(dx.data(), xs.data(), pos_of.data(), tokens, K, D);
    }, 3) / double(P * D);
  }
  return r;
}

// Seconds per token of everything but the GEMMs and the attention core, from the element rates
// and what each block runs per token (model.h, parallel/train_step.cpp).
double other_seconds_per_token(const ModelConfig& m, const ElementRates& r, bool lowp) {
  const double D = m.hidden, H = m.heads, Q = m.q_lora_rank, L = m.kv_lora_rank, dq = m.qk_nope_dim + m.qk_rope_dim,
               dv = m.v_head_dim, K = m.experts_per_token, I = m.expert_inter, S = m.shared_experts * m.expert_inter;
  // Rows in and out of each GEMM per token: bf16 rounds x in forward, dy and x again in backward.
  auto rounded = [](double in, double out) { return 2 * in + out; };
  double s = 0;
  for (int l = 0; l < m.layers + m.mtp_depth; ++l) {
    const bool moe = is_moe_layer(m, l);
    double norms = 2 * D + L + (Q > 0 ? Q : 0), swiglu = moe ? I * K + S : m.dense_inter;
    double round = rounded(D, Q > 0 ? Q : H * dq) + (Q > 0 ? rounded(Q, H * dq) : 0) + rounded(D, L + m.qk_rope_dim) +
                   rounded(L, H * (m.qk_nope_dim + dv)) + rounded(H * dv, D);
    const double ffn_in = moe ? K + m.shared_experts : 1, width = moe ? I : m.dense_inter;
    round += ffn_in * (2 * rounded(D, width) + rounded(width, D));
    // Residual adds and gradient accumulation (4 D), RoPE on q and k, the router's scores.
    double adds = 4 * D + 2 * H * m.qk_rope_dim + (moe ? 4 * m.routed_experts : 0);
    s += norms * r.norm + swiglu * r.swiglu + adds * r.add + (lowp ? round * r.round : 0) + (moe ? K * D * r.route : 0);
  }
  // The head: cross entropy forward and backward over the vocabulary, twice (its backward
  // recomputes the logits and their softmax).
  s += (1 + m.mtp_depth) * 1.5 * m.vocab_size * r.entropy;
  return s;
}

}  // namespace

std::vector<std::string> device_names() {
  std::vector<std::string> v;
  for (const DeviceSpec& d : table()) v.push_back(d.name);
  v.push_back("cpu");
  return v;
}

DeviceSpec device_spec(const std::string& name, const Config& cfg) {
  for (const DeviceSpec& d : table())
    if (d.name == name) return d;
  if (name != "cpu") {
    std::string all;
    for (const std::string& n : device_names()) all += (all.empty() ? "" : ", ") + n;
    throw error("--gpu: unknown device '", name, "' (expected one of ", all, ")");
  }
  DeviceSpec d;
  d.name = "cpu";
  const Precision prec = parse_precision(cfg.train.precision);
  const bool bf16 = prec == Precision::BF16 && bf16_gemm_native();
  const double gflops = cpu_peak_gflops(prec);
  d.fp32_tflops = d.bf16_tflops = d.fp8_tflops = gflops / 1e3;  // the ceiling the step's GEMMs run at
  d.gemm_efficiency = d.attention_efficiency = 1;
  d.hbm_gib = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)) / 1073741824.0;
  d.hbm_gbps = d.intra_gbps = d.inter_gbps = copy_gbps();
  // Peak RSS of `moe bench train --config configs/tiny.yaml` (libraries, thread pool, MPI): 181 MiB
  // with 0.7 MiB of state, measured here (docs/parallelism.md, "moe plan").
  d.runtime_gib = 180.0 / 1024;
  const int64_t tokens = int64_t(cfg.train.micro_batch) * cfg.data.seq_len;
  std::tie(d.cpu_gemm_s_per_token, d.cpu_f32_gemm_s_per_token) = gemm_seconds_per_token(cfg.model, tokens, bf16);
  d.cpu_attention_s_per_token = attention_seconds_per_token(cfg.model, cfg.data.seq_len, bf16);
  const ElementRates rates = element_rates(tokens, cfg.model.hidden, cfg.model.vocab_size,
                                           std::max(1, cfg.model.experts_per_token));
  d.cpu_other_s_per_token = other_seconds_per_token(cfg.model, rates, prec != Precision::FP32);
  d.cpu_adamw_s_per_element = rates.adamw;
  d.source = "this machine, measured now: GEMMs at the model's shapes (" + std::string(bf16 ? "bf16" : "f32") + ", " +
             std::to_string(num_threads()) + " threads), the attention core, a 64 MiB copy";
  return d;
}

}  // namespace moe
