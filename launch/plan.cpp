#include "launch/plan.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>

#include "framework/error.h"
#include "framework/precision.h"
#include "model/model.h"
#include "model/token_dispatcher.h"

namespace moe {

namespace {

constexpr int64_t kF32 = 4;

// The parameter units as one expert-parallel rank holds them: each unit's elements, kind, and the
// block it belongs to (units of one block are gathered together: model/unit_runner.h).
struct UnitShape {
  std::string block;
  UnitKind kind;
  int64_t numel;
  int uses = 1;  // compute units that read it (model.cpp add_compute_units): each gathers it anew
};

std::vector<UnitShape> unit_shapes(const ModelConfig& m, int ep) {
  // Without storage the registry costs names and shapes only (DeepSeek-V3 671B: a few seconds).
  DeepSeekV3 model(m, ModelPlacement{ep, 0, /*own_storage=*/false});
  std::vector<UnitShape> out;
  for (const ParamUnit& u : model.params().units()) {
    if (u.kind == UnitKind::Expert && u.expert_part != 0) continue;  // another rank's experts
    std::string block = u.name;
    const std::string layers = "model.layers.";
    if (block.rfind(layers, 0) == 0) block = block.substr(0, block.find('.', layers.size()));
    // The embedding and lm_head are read again by every MTP module, the embedding by a tied head.
    int uses = 1;
    if (u.name == "model.embed_tokens") uses += m.mtp_depth + (m.tie_embeddings ? 1 : 0);
    if (u.name == "head") uses += m.tie_embeddings ? 0 : m.mtp_depth;
    out.push_back({block, u.kind, u.numel, uses});
  }
  return out;
}

// The units of ep's registry, cached: a layout search asks for the same few ep values many times.
const std::vector<UnitShape>& cached_units(const ModelConfig& m, int ep) {
  struct Entry {
    ModelConfig model;
    int ep;
    std::vector<UnitShape> units;
  };
  static std::deque<Entry> cache;  // a deque: references stay valid as it grows
  for (const Entry& e : cache)
    if (e.ep == ep && e.model == m) return e.units;
  cache.push_back({m, ep, unit_shapes(m, ep)});
  return cache.back().units;
}

// Bytes saved for backward per token by one block (model.h BlockActs; model/layers.h kept()): f32,
// except at bf16 the inputs only bf16 GEMMs read, kept as bf16 alone (b below); the routed experts'
// rows at their mean (tokens x top-k, dropless), dispatched as bf16 at bf16 when D is even. In
// parts, because blocks sharing one BlockActs (recompute) hold the union of their parts.
struct BlockBytes {
  double common = 0;                // norms' statistics, ln1, h, attention
  double ln2_f32 = 0, ln2_bf16 = 0;  // ln2 (BlockActs::ln2_ND, ln2_bf16_ND)
  double dense = 0, moe = 0;        // the dense MLP's, or the router's, dispatch's and experts'
  double total() const { return common + ln2_f32 + ln2_bf16 + dense + moe; }
};

BlockBytes block_activation_bytes(const ModelConfig& m, bool moe_block, int ep, Precision prec) {
  const double D = m.hidden, H = m.heads, Q = m.q_lora_rank, L = m.kv_lora_rank, dq = m.qk_nope_dim + m.qk_rope_dim,
               dv = m.v_head_dim, E = m.routed_experts, K = m.experts_per_token, I = m.expert_inter;
  const bool bf16 = prec == Precision::BF16, odd = m.hidden % 2 != 0;
  const double f = kF32, b = bf16 ? 2 : kF32;
  BlockBytes n;
  n.common = f * (D + 2) + b * D;                                           // h, the rstds; ln1
  if (Q > 0) n.common += f * (Q + 1) + b * Q;                               // q_a, its rstd; its norm
  n.common += f * (L + 1 + H);                                              // kv_c, its rstd, lse
  n.common += b * (L + H * dv + 2 * H * dq + H * dv);                       // kv_norm, o, q, k, v
  if (!moe_block) {
    (bf16 ? n.ln2_bf16 : n.ln2_f32) = b * D;
    n.dense = 2 * b * m.dense_inter;                                        // the MLP's gate, up
    return n;
  }
  n.ln2_f32 = f * D;                                                        // the router reads it
  n.ln2_bf16 = bf16 ? 2 * D : 0;
  n.moe = f * (2 * E + 2 * K);                                              // router logits, scores, indices, weights
  n.moe += 2 * b * I * m.shared_experts;                                   // the shared experts' gate, up
  // The routed input rows and the experts' outputs as moved (bf16 at bf16, f32 with odd D, the
  // inputs then rounded by the experts), the dispatch plan, the rows received from other ranks.
  const double moved = bf16 && !odd ? 2 : f, rounded = bf16 && odd ? 2 : 0;
  n.moe += (2 * moved + rounded) * K * D + f * 2 * K;
  if (ep > 1) n.moe += moved * K * D;
  n.moe += 2 * b * I * K;                                                   // the routed experts' gate, up
  return n;
}

// Ranks [first, first + size) inside one node of gpus_per_node consecutive ranks.
bool inside_node(int first, int size, int gpus_per_node) { return first / gpus_per_node == (first + size - 1) / gpus_per_node; }

// Ring all-gather / reduce-scatter time of `bytes` (the gathered buffer) over a group of g.
double ring_seconds(double bytes, int g, double gbps) { return g > 1 ? bytes * (g - 1) / g / (gbps * 1e9) : 0; }

}  // namespace

bool is_moe_layer(const ModelConfig& m, int l) { return l >= m.dense_layers && m.routed_experts > 0; }

Plan make_plan(const Config& cfg, const PlanLayout& L, const DeviceSpec& dev) {
  const ModelConfig& m = cfg.model;
  if (L.gpus < 1 || L.replicas < 1 || L.ep < 1 || L.micro_batch < 1 || L.grad_accum < 1 || L.gpus_per_node < 1)
    throw error("plan: gpus, replicas, ep, micro-batch, grad_accum and gpus per node must be positive");
  if (L.gpus % L.replicas) throw error("plan: ", L.gpus, " ranks do not split into ", L.replicas, " replicas (parallel.dp_replicate)");
  if (L.replica_size() % L.ep)
    throw error("plan: a replica of ", L.replica_size(), " ranks does not split into ep ", L.ep, " (parallel.ep)");
  if (m.routed_experts % L.ep) throw error("plan: ", m.routed_experts, " routed experts do not split over ep ", L.ep);
  Plan p;
  p.layout = L;
  p.precision = cfg.train.precision;
  const ParamCounts pc = count_params(m);
  p.params_total = pc.total;
  p.params_active = pc.active;
  const int64_t T = cfg.data.seq_len, mb_tokens = int64_t(L.micro_batch) * T;
  p.tokens_per_step = mb_tokens * L.grad_accum * L.gpus;
  p.flops_per_token = flops_per_token(m, T);

  // State and FSDP traffic, unit by unit as parallel/fsdp.cpp cuts them.
  const int S = L.replica_size(), dp = L.dp(), A = L.grad_accum;
  CommCounts comm{};
  auto add = [&](CollectiveKind k, int64_t calls, int64_t bytes) {
    comm[int(k)].calls += calls;
    comm[int(k)].bytes += bytes;
  };
  std::map<std::string, int64_t> block_full;  // gathered bytes of each block's units
  std::vector<std::string> block_order;
  int64_t shard_total = 0;
  double gather_s = 0;
  // A replica is S consecutive ranks; its dp groups stride inside it, so they cross nodes when it does.
  const bool shard_group_in_node = inside_node(0, S, L.gpus_per_node);
  for (const UnitShape& u : cached_units(m, L.ep)) {
    const int g = u.kind == UnitKind::Sharded ? S : u.kind == UnitKind::Expert ? dp : 1;
    int64_t size = (u.numel + g - 1) / g;
    size = (size + 15) / 16 * 16;
    shard_total += size;
    if (g == 1) continue;
    const int64_t full = int64_t(g) * size * kF32;
    // Per micro-batch and use: gathered for the forward and again for the backward,
    // reduce-scattered once.
    const int64_t n = int64_t(A) * u.uses;
    add(CollectiveKind::AllGather, 2 * n, 2 * n * full);
    add(CollectiveKind::ReduceScatter, n, n * full);
    gather_s += ring_seconds(3.0 * n * full, g, shard_group_in_node ? dev.intra_gbps : dev.inter_gbps);
    if (!block_full.count(u.block)) block_order.push_back(u.block);
    block_full[u.block] += full;
  }
  p.state_param_elements = shard_total;
  p.state_bytes = shard_total * 4 * kF32;
  // Backward holds a block's parameters and gradient buffer, the next block's prefetched
  // parameters and the previous block's gradient still being reduce-scattered.
  for (size_t b = 0; b < block_order.size(); ++b) {
    int64_t here = 2 * block_full[block_order[b]];
    if (b > 0) here += block_full[block_order[b - 1]];
    if (b + 1 < block_order.size()) here += block_full[block_order[b + 1]];
    p.gathered_bytes = std::max(p.gathered_bytes, here);
  }
  const Precision prec = parse_precision(cfg.train.precision);
  const double lowp = prec == Precision::BF16 ? 0.5 : prec == Precision::FP8 ? 0.25 + 1.0 / 16384 : 0;
  // bf16/fp8 copies of the weights in use: the gathered parameters (half the working set above),
  // or the whole model in one process.
  p.lowp_weight_bytes = int64_t(lowp * (S > 1 || dp > 1 ? p.gathered_bytes / 2 : shard_total * kF32));

  // The step's host sums (parallel/train_step.cpp): losses, expert loads, the skip decision; the
  // grad norm over one replica; with HSDP the shard-sized gradients across replicas.
  int moe_layers = 0;
  for (int l = 0; l < m.layers + m.mtp_depth; ++l) moe_layers += is_moe_layer(m, l);
  double allreduce_s = 0;
  if (L.gpus > 1) {
    add(CollectiveKind::AllReduce, 3, 5 * 8 + int64_t(moe_layers) * m.routed_experts * kF32 + 8);
    if (S > 1) add(CollectiveKind::AllReduce, 1, 8);
    if (L.replicas > 1) {
      add(CollectiveKind::AllReduce, 1, shard_total * kF32);
      // Replicas sit on different nodes once a replica fills one.
      const bool cross_in_node = inside_node(0, L.gpus, L.gpus_per_node);
      allreduce_s = 2 * ring_seconds(double(shard_total) * kF32, L.replicas, cross_in_node ? dev.intra_gbps : dev.inter_gbps);
    }
  }
  // Expert parallelism: per MoE layer and micro-batch, the count exchange and four row exchanges
  // (dispatch and combine, forward and backward), each rank sending its tokens' routed copies;
  // recomputing runs the forward's three again (not in the MTP modules). MTP module k routes B x (T - k) tokens.
  double a2a_s = 0;
  if (L.ep > 1 && moe_layers > 0) {
    const bool fp8_rows = cfg.parallel.fp8_dispatch && prec == Precision::FP8;
    // Floats per dispatched row: packed E4M3 rows, bf16 pairs at bf16 (even D), or f32; the
    // forward's combine brings the outputs back as bf16 pairs at bf16 too.
    const bool bf16_rows = prec == Precision::BF16 && m.hidden % 2 == 0;
    const int64_t dispatch_width = fp8_rows ? fp8_packed_width(m.hidden) : bf16_rows ? m.hidden / 2 : m.hidden;
    const int64_t combine_width = bf16_rows ? m.hidden / 2 : m.hidden;
    int64_t calls = 0, bytes_per_mb = 0;
    for (int l = 0; l < m.layers + m.mtp_depth; ++l) {
      if (!is_moe_layer(m, l)) continue;
      const int64_t tokens = l < m.layers ? mb_tokens : int64_t(L.micro_batch) * (T - (l - m.layers + 1));
      const int64_t counts = int64_t(m.routed_experts) * 8, copies = tokens * m.experts_per_token;
      calls += 5;
      bytes_per_mb += counts + copies * kF32 * (dispatch_width + combine_width + 2 * int64_t(m.hidden));
      if (L.recompute && l < m.layers) {  // MTP modules keep their activations
        calls += 3;
        bytes_per_mb += counts + copies * kF32 * (dispatch_width + combine_width);
      }
    }
    add(CollectiveKind::AllToAllV, calls * A, bytes_per_mb * A);
    // The share of the rows leaving the rank, and of those leaving the node.
    const int per_node = std::min(L.ep, L.gpus_per_node);
    const double off_rank = double(L.ep - 1) / L.ep, off_node = double(L.ep - per_node) / L.ep;
    const double bytes = double(bytes_per_mb) * A;
    a2a_s = std::max(bytes * (off_rank - off_node) / (dev.intra_gbps * 1e9),
                     off_node > 0 ? bytes * off_node / (dev.inter_gbps * 1e9) : 0.0);
  }
  for (int k = 0; k < kCollectiveKinds; ++k) {
    CommLine line;
    line.count = comm[k];
    p.comm.push_back(line);
  }
  auto spans_nodes = [&](CollectiveKind k) {
    switch (k) {
      case CollectiveKind::AllGather:
      case CollectiveKind::ReduceScatter: return !shard_group_in_node;
      case CollectiveKind::AllToAllV: return !inside_node(0, L.ep, L.gpus_per_node);
      default: return !inside_node(0, L.gpus, L.gpus_per_node);
    }
  };
  for (int k = 0; k < kCollectiveKinds; ++k) {
    CommLine& line = p.comm[k];
    (spans_nodes(CollectiveKind(k)) ? line.inter_bytes : line.intra_bytes) = double(line.count.bytes);
  }
  p.comm[int(CollectiveKind::AllGather)].seconds = gather_s * 2 / 3;
  p.comm[int(CollectiveKind::ReduceScatter)].seconds = gather_s / 3;
  p.comm[int(CollectiveKind::AllReduce)].seconds = allreduce_s;
  p.comm[int(CollectiveKind::AllToAllV)].seconds = a2a_s;

  // Activations saved for backward, per micro-batch (model.h: resid_ of every block, BlockActs of
  // every block or of one when recomputing, the final norm and the losses; an MTP module keeps its
  // block's too, and its own inputs, norms, projection, output and head rows).
  // With recompute the blocks share one BlockActs, which holds the union of their parts.
  double per_token_blocks = 0, largest_block_f32 = 0, mtp_bytes = 0;
  BlockBytes shared;
  for (int l = 0; l < m.layers + m.mtp_depth; ++l) {
    const BlockBytes n = block_activation_bytes(m, is_moe_layer(m, l), L.ep, prec),
                     n_f32 = block_activation_bytes(m, is_moe_layer(m, l), L.ep, Precision::FP32);
    largest_block_f32 = std::max(largest_block_f32, n_f32.total());
    if (l >= m.layers) {
      const double k = l - m.layers + 1;  // module k runs on T - k positions
      mtp_bytes += (n.total() + kF32 * (9.0 * m.hidden + 7)) * (double(T) - k) / double(T);
      continue;
    }
    per_token_blocks += n.total();
    shared = {std::max(shared.common, n.common), std::max(shared.ln2_f32, n.ln2_f32),
              std::max(shared.ln2_bf16, n.ln2_bf16), std::max(shared.dense, n.dense), std::max(shared.moe, n.moe)};
  }
  const double resid = kF32 * (double(m.layers + 1) * m.hidden + m.hidden + 3);
  p.activation_bytes_no_recompute = int64_t((per_token_blocks + mtp_bytes + resid) * mb_tokens);
  p.activation_bytes_recompute = int64_t((shared.total() + mtp_bytes + resid) * mb_tokens);
  p.activation_bytes = L.recompute ? p.activation_bytes_recompute : p.activation_bytes_no_recompute;
  // Backward's temporaries of one block (f32 gradients of its activations) and the head's logits chunk.
  p.workspace_bytes = int64_t(largest_block_f32 * mb_tokens + double(std::min<int64_t>(mb_tokens, 1024)) * m.vocab_size * kF32);
  if (L.ep > 1) p.comm_buffer_bytes = 2 * mb_tokens * m.experts_per_token * int64_t(m.hidden) * kF32;
  p.runtime_bytes = int64_t(dev.runtime_gib * 1073741824.0);
  p.peak_bytes = p.state_bytes + p.gathered_bytes + p.lowp_weight_bytes + p.activation_bytes + p.workspace_bytes +
                 p.comm_buffer_bytes + p.runtime_bytes;
  p.fits = p.peak_bytes <= int64_t(dev.hbm_gib * 1073741824.0);

  // Compute per rank and step: GEMMs at the precision's rate, the attention core, the memory-bound
  // rest (norms, activations, routing: each saved element written, read, its gradient written and
  // read) and AdamW (28 B per element: read p, g, m, v, write p, m, v).
  const double rank_tokens = double(mb_tokens) * A;
  const double attn_flops = 6.0 * (m.layers + m.mtp_depth) * m.heads * double(T) *
                            (m.qk_nope_dim + m.qk_rope_dim + m.v_head_dim);
  // The router and lm_head GEMMs run in f32 at any precision, the head's forward again in backward.
  double f32_flops = double(1 + m.mtp_depth) * 8.0 * m.hidden * m.vocab_size;
  for (int l = 0; l < m.layers + m.mtp_depth; ++l)
    if (is_moe_layer(m, l)) f32_flops += 6.0 * m.hidden * m.routed_experts;
  const double gemm_flops = p.flops_per_token - attn_flops - 6.0 * (1 + m.mtp_depth) * m.hidden * m.vocab_size -
                            6.0 * moe_layers * m.hidden * m.routed_experts;
  const double recompute_factor = L.recompute ? 4.0 / 3.0 : 1.0;  // the forward again in backward
  double gemm_s, f32_gemm_s, attn_s;
  if (dev.cpu_gemm_s_per_token > 0) {
    gemm_s = dev.cpu_gemm_s_per_token * rank_tokens;
    f32_gemm_s = dev.cpu_f32_gemm_s_per_token * rank_tokens;
    attn_s = dev.cpu_attention_s_per_token * rank_tokens;
  } else {
    const double peak = prec == Precision::FP8 ? dev.fp8_tflops : prec == Precision::BF16 ? dev.bf16_tflops : dev.fp32_tflops;
    gemm_s = gemm_flops * rank_tokens / (peak * dev.gemm_efficiency * 1e12);
    f32_gemm_s = f32_flops * rank_tokens / (dev.fp32_tflops * dev.gemm_efficiency * 1e12);
    attn_s = attn_flops * rank_tokens / ((prec == Precision::FP32 ? dev.fp32_tflops : dev.bf16_tflops) * dev.attention_efficiency * 1e12);
  }
  const double memory_s = dev.cpu_other_s_per_token > 0
                              ? dev.cpu_other_s_per_token * rank_tokens + dev.cpu_adamw_s_per_element * double(shard_total)
                              : (4.0 * (per_token_blocks + mtp_bytes) * rank_tokens + 28.0 * double(shard_total)) / (dev.hbm_gbps * 1e9);
  p.gemm_s = gemm_s * recompute_factor + f32_gemm_s;  // the head and router are not recomputed
  p.attention_s = attn_s * recompute_factor;
  p.memory_s = memory_s;
  p.compute_s = p.gemm_s + p.attention_s + p.memory_s;
  // FSDP's gathers are posted a block ahead and its reduce-scatters complete at the next block:
  // they hide behind compute. The all-to-all and the cross-replica all-reduce wait.
  const double fsdp_s = gather_s;
  p.exposed_comm_s = std::max(0.0, fsdp_s - p.compute_s) + a2a_s + allreduce_s;
  p.step_s = p.compute_s + p.exposed_comm_s;
  p.tokens_per_s = double(p.tokens_per_step) / p.step_s;
  const double peak = (prec == Precision::FP8 ? dev.fp8_tflops : prec == Precision::BF16 ? dev.bf16_tflops : dev.fp32_tflops);
  p.mfu = p.flops_per_token * p.tokens_per_s / (peak * 1e12 * L.gpus);
  p.gpu_hours_per_trillion = 1e12 / p.tokens_per_s * L.gpus / 3600.0;
  return p;
}

std::vector<Plan> search_layouts(const Config& cfg, int gpus, int gpus_per_node, int64_t global_batch,
                                 const DeviceSpec& dev, int best) {
  std::vector<Plan> out;
  for (int r = 1; r <= gpus; ++r) {
    if (gpus % r) continue;
    const int S = gpus / r;
    for (int ep = 1; ep <= S; ep *= 2) {
      if (S % ep || cfg.model.routed_experts % ep) continue;
      for (int mb = 1; mb <= 64; mb *= 2) {
        if (global_batch % (int64_t(mb) * gpus)) continue;
        for (bool rc : {false, true}) {
          PlanLayout L{gpus, gpus_per_node, r, ep, mb, int(global_batch / (int64_t(mb) * gpus)), rc};
          Plan p = make_plan(cfg, L, dev);
          if (p.fits) out.push_back(std::move(p));
        }
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const Plan& a, const Plan& b) { return a.step_s < b.step_s; });
  if (int(out.size()) > best) out.resize(size_t(best));
  return out;
}

nlohmann::json plan_json(const Plan& p) {
  const PlanLayout& L = p.layout;
  nlohmann::json comm = nlohmann::json::object();
  for (int k = 0; k < kCollectiveKinds; ++k) {
    const CommLine& c = p.comm[size_t(k)];
    comm[collective_name(CollectiveKind(k))] = {{"calls", c.count.calls}, {"bytes", c.count.bytes},
                                                 {"intra_node_bytes", c.intra_bytes}, {"inter_node_bytes", c.inter_bytes},
                                                 {"seconds", c.seconds}};
  }
  return {{"layout", {{"gpus", L.gpus}, {"gpus_per_node", L.gpus_per_node}, {"dp_replicate", L.replicas},
                      {"shard_group", L.replica_size()}, {"ep", L.ep}, {"dp", L.dp()}, {"micro_batch", L.micro_batch},
                      {"grad_accum", L.grad_accum}, {"recompute", L.recompute}}},
          {"precision", p.precision},
          {"params_total", p.params_total},
          {"params_active", p.params_active},
          {"flops_per_token", p.flops_per_token},
          {"tokens_per_step", p.tokens_per_step},
          {"memory_bytes", {{"state", p.state_bytes}, {"params", p.state_bytes / 4}, {"grads", p.state_bytes / 4},
                            {"adam_moments", p.state_bytes / 2},
                            {"gathered", p.gathered_bytes}, {"low_precision_weights", p.lowp_weight_bytes},
                            {"activations", p.activation_bytes},
                            {"activations_no_recompute", p.activation_bytes_no_recompute},
                            {"activations_recompute", p.activation_bytes_recompute},
                            {"workspace", p.workspace_bytes}, {"comm_buffers", p.comm_buffer_bytes},
                            {"runtime", p.runtime_bytes}, {"peak", p.peak_bytes}}},
          {"fits", p.fits},
          {"comm_per_step", comm},
          {"step_s", p.step_s},
          {"compute_s", p.compute_s},
          {"compute_split_s", {{"gemm", p.gemm_s}, {"attention", p.attention_s}, {"memory_bound", p.memory_s}}},
          {"exposed_comm_s", p.exposed_comm_s},
          {"tokens_per_s", p.tokens_per_s},
          {"mfu", p.mfu},
          {"gpu_hours_per_trillion_tokens", p.gpu_hours_per_trillion}};
}

}  // namespace moe
