#include "model/model.h"

#include <algorithm>

#include "framework/backend.h"
#include "framework/scratch.h"

namespace moe {

namespace {
constexpr int64_t kHeadChunk = 1024;  // rows of logits alive at once
}

void Block::init(ParamStore& ps, int layer, const ModelConfig& c, const ModelPlacement& placement) {
  add_params(ps, ps.begin_unit("model.layers." + std::to_string(layer)), layer, c, placement);
}

void Block::add_params(ParamStore& ps, int unit_, int layer, const ModelConfig& c, const ModelPlacement& placement) {
  std::string p = "model.layers." + std::to_string(layer);
  unit = unit_;
  float eps = float(c.rms_norm_eps);
  input_layernorm.init(ps, p + ".input_layernorm.weight", c.hidden, eps);
  self_attn.init(ps, p + ".self_attn", c);
  post_attention_layernorm.init(ps, p + ".post_attention_layernorm.weight", c.hidden, eps);
  is_moe = layer >= c.dense_layers;
  if (is_moe)
    moe.init(ps, p + ".mlp", c, placement);
  else
    mlp.init(ps, p + ".mlp", c.hidden, c.dense_inter, float(c.init_std));
}

void Block::forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, const RopeTables& rt,
                    BlockActs& a, float* load_E, float* cache_rows) const {
  const int64_t N = B * T, D = input_layernorm.dim;
  ensure_acts(N, a);
  // At fp8 both norms also write their outputs' E4M3 rows, which every fp8 projection reading them
  // uses (the router and the f32 activations kept for backward read the f32 outputs).
  ScratchScope scope;
  const ScratchFp8Rows q1 = prec == Precision::FP8 ? ScratchFp8Rows(N, D) : ScratchFp8Rows();
  Tensor ln1_f32, attn_out = scratch({N, D});
  const Activation ln1 = input_layernorm.forward_kept(ps, a.ln1_ND, ln1_f32, a.ln1_rstd_N.f32(), x, N,
                                                      prec == Precision::BF16, q1.ptr());
  self_attn.forward(ps, attn_out.f32(), ln1, B, T, rt, a.attn, cache_rows);
  feed_forward(ps, y, x, attn_out.f32(), B, T, a, load_E);
}

void Block::decode(const ParamStore& ps, float* y, const float* x, const LatentStep& step, float* cache,
                   const float* kv_b_eff, BlockActs& a) const {
  const int64_t n = step.n, D = input_layernorm.dim;
  ensure_acts(n, a);
  ScratchScope scope;
  const ScratchFp8Rows q1 = prec == Precision::FP8 ? ScratchFp8Rows(n, D) : ScratchFp8Rows();
  Tensor ln1_f32 = scratch({n, D}), attn_out = scratch({n, D});
  const Activation ln1 = input_layernorm.forward(ps, ln1_f32.f32(), a.ln1_rstd_N.f32(), x, n, q1.ptr());
  self_attn.decode(ps, attn_out.f32(), ln1, step, cache, kv_b_eff, a.attn);
  feed_forward(ps, y, x, attn_out.f32(), n, 1, a, nullptr);  // every token is a sequence of its own to the MoE
}

uint16_t* Block::bf16_copy(Tensor& t, int64_t N) const {
  if (prec != Precision::BF16) return nullptr;
  t.ensure({N, input_layernorm.dim}, DType::BF16);
  return t.data<uint16_t>();
}

const uint16_t* Block::kept_bf16(const Tensor& t) const {
  return prec == Precision::BF16 ? t.data<uint16_t>() : nullptr;
}

void Block::ensure_acts(int64_t N, BlockActs& a) const {
  const int64_t D = input_layernorm.dim;
  a.ln1_rstd_N.ensure({N});
  a.h_ND.ensure({N, D});
  a.ln2_rstd_N.ensure({N});
}

// h = x + attn_out; y = h + mlp(ln2(h)).
void Block::feed_forward(const ParamStore& ps, float* y, const float* x, const float* attn_out, int64_t B,
                         int64_t T, BlockActs& a, float* load_E) const {
  const int64_t N = B * T, D = input_layernorm.dim;
  ScratchScope scope;
  const ScratchFp8Rows q2 = prec == Precision::FP8 ? ScratchFp8Rows(N, D) : ScratchFp8Rows();
  float* h = a.h_ND.f32();
  compute().add(h, x, attn_out, N * D);
  Tensor ln2_f32;
  const bool bf16 = prec == Precision::BF16;
  auto norm = [&]() -> Activation {
    if (!is_moe)
      return post_attention_layernorm.forward_kept(ps, bf16 ? a.ln2_bf16_ND : a.ln2_ND, ln2_f32, a.ln2_rstd_N.f32(),
                                                   h, N, bf16, q2.ptr());
    a.ln2_ND.ensure({N, D});
    return post_attention_layernorm.forward(ps, a.ln2_ND.f32(), a.ln2_rstd_N.f32(), h, N, q2.ptr(),
                                            bf16_copy(a.ln2_bf16_ND, N));
  };
  const Activation ln2 = norm();
  if (is_moe)
    moe.forward(ps, y, ln2, B, T, a.moe, load_E);
  else
    mlp.forward(ps, y, ln2, N, a.mlp);
  compute().add(y, y, h, N * D);
}

void Block::backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T,
                     const RopeTables& rt, BlockActs& a, float loss_scale) const {
  const int64_t N = B * T, D = input_layernorm.dim;
  // x_out = h + mlp(ln2(h)):  dh = dy + ln2^T mlp^T dy
  ScratchScope scope;
  Tensor dln2 = scratch({N, D}), dh = scratch({N, D});
  const Activation ln2 = is_moe                       ? Activation(a.ln2_ND.f32(), nullptr, kept_bf16(a.ln2_bf16_ND))
                         : prec == Precision::BF16 ? kept(a.ln2_bf16_ND)
                                                   : kept(a.ln2_ND);
  if (is_moe)
    moe.backward(ps, dln2.f32(), dy, ln2, B, T, a.moe, loss_scale);
  else
    mlp.backward(ps, dln2.f32(), dy, ln2, N, a.mlp);
  post_attention_layernorm.backward(ps, dh.f32(), dln2.f32(), a.h_ND.f32(), a.ln2_rstd_N.f32(), N);
  float* pdh = dh.f32();
  compute().add(pdh, pdh, dy, N * D);
  // h = x + attn(ln1(x)):  dx = dh + ln1^T attn^T dh
  Tensor dln1 = scratch({N, D});
  dln1.zero_();
  self_attn.backward(ps, dln1.f32(), pdh, kept(a.ln1_ND), B, T, rt, a.attn);
  input_layernorm.backward(ps, dx, dln1.f32(), x, a.ln1_rstd_N.f32(), N);
  compute().add(dx, dx, pdh, N * D);
}

DeepSeekV3::DeepSeekV3(const ModelConfig& c, const ModelPlacement& placement) : cfg_(c), placement_(placement) {
  embed_unit_ = ps_.begin_unit("model.embed_tokens");
  embed_tokens = ps_.add("model.embed_tokens.weight", {c.vocab_size, c.hidden}, Init::Normal, float(c.init_std));
  blocks_.resize(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    blocks_[l].init(ps_, l, c, placement);
    if (blocks_[l].is_moe) moe_blocks_.push_back(l);
  }
  head_unit_ = ps_.begin_unit("head");
  norm_.init(ps_, "model.norm.weight", c.hidden, float(c.rms_norm_eps));
  lm_head = c.tie_embeddings ? embed_tokens
                             : ps_.add("lm_head.weight", {c.vocab_size, c.hidden}, Init::Normal, float(c.init_std));
  add_mtp_modules();
  if (placement.own_storage)
    ps_.allocate();
  else
    ps_.allocate_unbound();
  load_ = Tensor::zeros({int64_t(moe_layers()), int64_t(c.routed_experts)}, DType::F32, Device::CPU);
  add_compute_units();
}

// Embedding, blocks, head. A block reads its dense unit and its local expert part, and prefetches
// the next block of the pass; the head reads the embedding too when the weights are tied.
void DeepSeekV3::add_compute_units() {
  const int L = cfg_.layers;
  embed_cu_ = units_.add({{embed_unit_}});
  for (int l = 0; l < L; ++l) {
    ComputeUnit u{{blocks_[l].unit}};
    if (blocks_[l].is_moe) u.params.push_back(blocks_[l].moe.expert_units[placement_.local_part]);
    u.prefetch_forward = l + 1 < L ? block_cu(l + 1) : -1;
    u.prefetch_backward = l > 0 ? block_cu(l - 1) : -1;
    units_.add(std::move(u));
  }
  ComputeUnit head{{head_unit_}};
  if (cfg_.tie_embeddings) head.params.push_back(embed_unit_);
  head_cu_ = units_.add(std::move(head));
  // MTP module k (compute unit head_cu_ + k) reads its own units, the embedding and lm_head: a
  // parameter unit read by several compute units is gathered for each and its gradient
  // reduce-scattered after each, the contributions adding up (as for tied embeddings).
  for (const MTPModule& m : mtp_) {
    ComputeUnit u{{m.block.unit}};
    if (m.block.is_moe) u.params.push_back(m.block.moe.expert_units[placement_.local_part]);
    u.params.push_back(embed_unit_);
    if (!cfg_.tie_embeddings) u.params.push_back(head_unit_);
    units_.add(std::move(u));
  }
}

void DeepSeekV3::set_expert_exchange(const ExpertExchange* ex) {
  for (int l : moe_blocks_) blocks_[l].moe.dispatcher.exchange = ex;
  for (int k : mtp_moe_) mtp_[k].block.moe.dispatcher.exchange = ex;
}

void DeepSeekV3::run_blocks(int64_t B, int64_t T, bool count_load, KVCache* cache, int64_t slot,
                            const int32_t* doc_start) {
  const int64_t N = B * T, D = cfg_.hidden;
  const int L = cfg_.layers;
  if (rope_.T != T) rope_.build(T, cfg_.qk_rope_dim, cfg_.rope_theta);
  rope_.set_documents(doc_start, B);
  resid_.resize(L + 1);
  acts_.resize(recompute_ ? 1 : L);
  for (int l = 0; l <= L; ++l) resid_[l].ensure({N, D});
  units_.run(embed_cu_, Pass::Forward, [&] {
    compute().embedding_forward(resid_[0].f32(), ids_N.data<int32_t>(), ps_.param(embed_tokens).f32(), N, D);
  });
  router_losses_2_.ensure({2});
  compute().zero(router_losses_2_.raw(), router_losses_2_.nbytes());
  int moe_i = 0;
  for (int l = 0; l < L; ++l) {
    BlockActs& a = acts_[recompute_ ? 0 : l];
    float* load = nullptr;
    if (blocks_[l].is_moe) load = count_load ? load_.f32() + int64_t(moe_i++) * cfg_.routed_experts : nullptr;
    float* cache_rows = cache ? cache->slot_rows(l, slot) : nullptr;
    units_.run(block_cu(l), Pass::Forward, [&] {
      blocks_[l].forward(ps_, resid_[l + 1].f32(), resid_[l].f32(), B, T, rope_, a, load, cache_rows);
    });
    if (blocks_[l].is_moe) add_router_losses(blocks_[l].moe.gate, a.moe.router);
  }
}

int64_t DeepSeekV3::activation_bytes() const {
  int64_t n = Tensor::total_bytes(xf_ND, xf_rstd_N, lse_N, losses_N);
  for (const Tensor& t : resid_) n += Tensor::total_bytes(t);
  for (const BlockActs& a : acts_) n += a.bytes();
  for (const MTPModule& m : mtp_) n += m.acts.bytes();
  return n;
}

void DeepSeekV3::add_router_losses(const Router& r, const RouterActs& a) {
  if (r.has_losses()) compute().add(router_losses_2_.f32(), router_losses_2_.f32(), a.losses_2.f32(), 2);
}

void DeepSeekV3::router_losses(ForwardStats& s) const {
  float l[2];
  compute().download(l, router_losses_2_.raw(), sizeof(l));
  s.aux_loss = l[0];
  s.z_loss = l[1];
}

void DeepSeekV3::final_norm(int64_t N) {
  xf_ND.ensure({N, int64_t(cfg_.hidden)});
  xf_rstd_N.ensure({N});
  norm_.forward(ps_, xf_ND.f32(), xf_rstd_N.f32(), resid_[cfg_.layers].f32(), N);
}

void DeepSeekV3::head_loss(int64_t N, int32_t* ranks) {
  lse_N.ensure({N});
  losses_N.ensure({N});
  scored_N_ = N;
  head_rows_loss(xf_ND.f32(), targets_N.data<int32_t>(), lse_N.f32(), losses_N.f32(), N, ranks);
}

void DeepSeekV3::head_rows_loss(const float* xf, const int32_t* targets, float* lse, float* losses, int64_t N,
                                int32_t* ranks) {
  const int64_t D = cfg_.hidden, V = cfg_.vocab_size;
  ScratchScope scope;
  Tensor logits = scratch({std::min(N, kHeadChunk), V});
  const float* W = ps_.param(lm_head).f32();
  for (int64_t r0 = 0; r0 < N; r0 += kHeadChunk) {
    int64_t n = std::min(kHeadChunk, N - r0);
    compute().linear_forward(logits.f32(), xf + r0 * D, W, n, D, V, false, head_precision());
    compute().cross_entropy_forward(losses + r0, lse + r0, logits.f32(), targets + r0, n, V);
    if (ranks) compute().target_ranks(ranks + r0, logits.f32(), targets + r0, n, V);
  }
}

ForwardStats DeepSeekV3::forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T, bool count_load,
                                 const int32_t* doc_start) {
  ForwardStats s = forward_ranked(ids, targets, B, T, count_load, nullptr, doc_start);
  if (!mtp_.empty()) {
    s.mtp_loss = mtp_forward(ids, targets, count_load);
    router_losses(s);
  }
  return s;
}

ForwardStats DeepSeekV3::forward_ranked(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T,
                                        bool count_load, int32_t* ranks_N, const int32_t* doc_start) {
  const int64_t N = B * T;
  B_ = B; T_ = T;
  mtp_ran_ = false;
  upload_tokens(ids_N, ids, N);
  upload_tokens(targets_N, targets, N);
  run_blocks(B, T, count_load, nullptr, 0, doc_start);
  ScratchScope scope;
  // The target ranks come from the logits chunks the loss already computes; the hits are summed
  // on the device, so the training step's accuracy costs one pass over each chunk.
  Tensor ranks = scratch({N}, DType::I32), hits = scratch({N});
  units_.run(head_cu_, Pass::Forward, [&] {
    final_norm(N);
    head_loss(N, ranks.data<int32_t>());
  });
  if (ranks_N) compute().download(ranks_N, ranks.raw(), size_t(N) * sizeof(int32_t));
  compute().top1_hits(hits.f32(), ranks.data<int32_t>(), N);
  ForwardStats s;
  s.top1_hits = compute().sum(hits.f32(), N);
  s.loss = compute().sum(losses_N.f32(), N) / double(N);
  router_losses(s);
  s.tokens = N;
  return s;
}

std::vector<float> DeepSeekV3::token_losses() const {
  MOE_CHECK(scored_N_ == B_ * T_, "token_losses() reads the losses of the last forward()");
  std::vector<float> out(static_cast<size_t>(scored_N_));
  compute().download(out.data(), losses_N.raw(), out.size() * sizeof(float));
  return out;
}

// dx[N,D] (assigned) of the loss scaled by loss_scale: each logits chunk is recomputed and turned
// into dlogits in place, then dxf and dW; then the final norm.
void DeepSeekV3::head_backward(float* dx, float loss_scale) {
  const int64_t N = B_ * T_, D = cfg_.hidden;
  ScratchScope scope;
  Tensor dxf = scratch({N, D});
  head_rows_backward(dxf.f32(), xf_ND.f32(), targets_N.data<int32_t>(), lse_N.f32(), loss_scale / float(N), N);
  norm_.backward(ps_, dx, dxf.f32(), resid_[cfg_.layers].f32(), xf_rstd_N.f32(), N);
}

void DeepSeekV3::head_rows_backward(float* dxf, const float* xf, const int32_t* targets, const float* lse,
                                    float scale, int64_t N) {
  const int64_t D = cfg_.hidden, V = cfg_.vocab_size;
  ScratchScope scope;
  Tensor logits = scratch({std::min(N, kHeadChunk), V});
  const float* W = ps_.param(lm_head).f32();
  float* dW = ps_.grad(lm_head).f32();
  for (int64_t r0 = 0; r0 < N; r0 += kHeadChunk) {
    int64_t n = std::min(kHeadChunk, N - r0);
    compute().linear_forward(logits.f32(), xf + r0 * D, W, n, D, V, false, head_precision());
    compute().cross_entropy_backward(logits.f32(), logits.f32(), lse + r0, targets + r0, scale, n, V);
    compute().linear_backward(dxf + r0 * D, dW, logits.f32(), xf + r0 * D, W, n, D, V, false, head_precision());
  }
}

void DeepSeekV3::backward(float loss_scale) {
  const int64_t B = B_, T = T_, N = B * T, D = cfg_.hidden;
  ScratchScope scope;
  Tensor dx = scratch({N, D}), dprev = scratch({N, D});
  // The MTP modules' gradient into the last block's output first (their units run after the
  // head's in forward), parked in dprev, then the head's.
  if (mtp_ran_) mtp_backward(dprev.f32(), loss_scale);
  units_.run(head_cu_, Pass::Backward, [&] { head_backward(dx.f32(), loss_scale); });
  if (mtp_ran_) compute().add(dx.f32(), dx.f32(), dprev.f32(), N * D);
  for (int l = cfg_.layers - 1; l >= 0; --l) {
    BlockActs& a = acts_[recompute_ ? 0 : l];
    units_.run(block_cu(l), Pass::Backward, [&] {
      if (recompute_) blocks_[l].forward(ps_, dprev.f32(), resid_[l].f32(), B, T, rope_, a, nullptr);
      blocks_[l].backward(ps_, dprev.f32(), dx.f32(), resid_[l].f32(), B, T, rope_, a, loss_scale);
    });
    std::swap(dx, dprev);
  }
  units_.run(embed_cu_, Pass::Backward, [&] {
    compute().embedding_backward(ps_.grad(embed_tokens).f32(), ids_N.data<int32_t>(), dx.f32(), N, D);
  });
}

Tensor DeepSeekV3::last_logits(const int32_t* ids, int64_t B, int64_t T) {
  B_ = B; T_ = T;
  scored_N_ = 0;
  upload_tokens(ids_N, ids, B * T);
  run_blocks(B, T, /*count_load=*/false);
  return head_logits(resid_[cfg_.layers].f32(), B, T);
}

// Logits [B, V] on the host of position T-1 of each of the B sequences in x [B*T, D] (the last
// block's output).
Tensor DeepSeekV3::head_logits(const float* x, int64_t B, int64_t T) {
  const int64_t D = cfg_.hidden, V = cfg_.vocab_size;
  ScratchScope scope;
  Tensor last = scratch({B, D}), normed = scratch({B, D}), rstd = scratch({B}), logits = scratch({B, V});
  units_.run(head_cu_, Pass::Forward, [&] {
    compute().copy_rows(last.f32(), D, x + (T - 1) * D, T * D, B, D);
    norm_.forward(ps_, normed.f32(), rstd.f32(), last.f32(), B);
    compute().linear_forward(logits.f32(), normed.f32(), ps_.param(lm_head).f32(), B, D, V, false, head_precision());
  });
  // A host tensor of its own: on the CPU, to() would return the scratch buffer itself, which the
  // next forward reuses.
  Tensor out = Tensor::empty({B, V});
  compute().download(out.raw(), logits.raw(), size_t(out.nbytes()));
  return out;
}

void DeepSeekV3::upload_tokens(Tensor& dst, const int32_t* host, int64_t N) {
  dst.ensure({N}, DType::I32);
  compute().upload(dst.raw(), host, size_t(N) * sizeof(int32_t));
}

void DeepSeekV3::update_router_bias(float rate) {
  for (size_t i = 0; i < moe_blocks_.size(); ++i)
    blocks_[moe_blocks_[i]].moe.gate.update_bias(ps_, load_.f32() + i * cfg_.routed_experts, rate);
  for (size_t i = 0; i < mtp_moe_.size(); ++i)
    mtp_[mtp_moe_[i]].block.moe.gate.update_bias(
        ps_, load_.f32() + (moe_blocks_.size() + i) * cfg_.routed_experts, rate);
  load_.zero_();
}

ParamCounts count_params(const ModelConfig& c) {
  const int64_t D = c.hidden, H = c.heads, d = c.qk_nope_dim + c.qk_rope_dim;
  int64_t q = c.q_lora_rank > 0 ? D * c.q_lora_rank + c.q_lora_rank + int64_t(c.q_lora_rank) * H * d : D * H * d;
  int64_t attn = q + D * (c.kv_lora_rank + c.qk_rope_dim) + c.kv_lora_rank +
                 int64_t(c.kv_lora_rank) * H * (c.qk_nope_dim + c.v_head_dim) + H * c.v_head_dim * D + 2 * D;
  int64_t expert = 3 * D * c.expert_inter;
  int64_t moe_common = int64_t(c.routed_experts) * D + expert * c.shared_experts;
  int64_t embed = int64_t(c.vocab_size) * D * (c.tie_embeddings ? 1 : 2) + D;
  int64_t dense = c.dense_layers * (attn + 3 * D * c.dense_inter);
  int moe_layers = c.layers - c.dense_layers;
  ParamCounts pc;
  pc.total = embed + dense + moe_layers * (attn + moe_common + expert * c.routed_experts);
  pc.active = embed + dense + moe_layers * (attn + moe_common + expert * c.experts_per_token);
  for (int l = c.layers; l < c.layers + c.mtp_depth; ++l) {  // MTP: norms, eh_proj and a block
    const int64_t own = 3 * D + 2 * D * D + attn;
    const bool moe = l >= c.dense_layers;
    pc.total += own + (moe ? moe_common + expert * c.routed_experts : 3 * D * c.dense_inter);
    pc.active += own + (moe ? moe_common + expert * c.experts_per_token : 3 * D * c.dense_inter);
  }
  return pc;
}

double flops_per_token(const ModelConfig& c, int64_t seq_len) {
  const double h = c.heads, d = c.hidden, nope = c.qk_nope_dim, rope = c.qk_rope_dim, v = c.v_head_dim;
  double q = c.q_lora_rank > 0 ? d * c.q_lora_rank + double(c.q_lora_rank) * h * (nope + rope) : d * h * (nope + rope);
  double attn = q + d * (c.kv_lora_rank + rope) + double(c.kv_lora_rank) * h * (nope + v) + h * v * d;
  double moe = d * c.routed_experts + 3.0 * d * c.expert_inter * (c.experts_per_token + c.shared_experts);
  double dense = 3.0 * d * c.dense_inter;
  double matmul = c.dense_layers * (attn + dense) + (c.layers - c.dense_layers) * (attn + moe) + d * c.vocab_size;
  double causal_attn = double(c.layers) * h * double(seq_len) * (nope + rope + v);
  for (int l = c.layers; l < c.layers + c.mtp_depth; ++l) {  // MTP: eh_proj, a block and the head
    matmul += 2 * d * d + attn + (l >= c.dense_layers ? moe : dense) + d * c.vocab_size;
    causal_attn += h * double(seq_len) * (nope + rope + v);
  }
  return 6.0 * matmul + 6.0 * causal_attn;
}

}  // namespace moe
