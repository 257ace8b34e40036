// DeepSeek-V3 causal language model (Hugging Face DeepseekV3ForCausalLM):
//   x = embed_tokens(ids)
//   per block l: h = x + self_attn(input_layernorm(x)); x = h + mlp(post_attention_layernorm(h))
//     (mlp is a dense SwiGLU for l < dense_layers, else the MoE layer)
//   logits = lm_head(norm(x)); loss = mean cross-entropy
// Forward saves what backward needs (or, with recompute, only each block's input, re-running the
// block in backward). The LM head and loss run in row chunks so [N, V] logits never exist at once.
// Letters: B sequences, T tokens each, N = B*T, D hidden, V vocabulary, E routed experts.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "model/attention.h"
#include "model/kv_cache.h"
#include "model/moe_layer.h"
#include "model/placement.h"
#include "model/unit_runner.h"

namespace moe {

struct BlockActs {
  // The norms' outputs as their backward readers take them (kept(), model/layers.h): ln1 (read by
  // q_a and kv_a) bf16 at bf16, else f32. ln2: f32 in ln2_ND, bf16 in ln2_bf16_ND (each tensor
  // keeps its type, so blocks sharing one BlockActs under recompute do not reallocate it): a MoE
  // block keeps the f32 (the router reads it) and at bf16 also the bf16 (the shared experts and the
  // dispatch read it); a dense block at bf16 only the bf16 (the MLP's gate and up), else the f32.
  // The attention's output is not kept: only h needs it.
  Tensor ln1_ND, ln1_rstd_N, h_ND, ln2_ND, ln2_rstd_N;
  Tensor ln2_bf16_ND;
  MLAActs attn;
  MoEActs moe;
  MLPActs mlp;
  int64_t bytes() const {
    return Tensor::total_bytes(ln1_ND, ln1_rstd_N, h_ND, ln2_ND, ln2_rstd_N, ln2_bf16_ND) + attn.bytes() +
           moe.bytes() + mlp.bytes();
  }
};

struct Block {
  RMSNorm input_layernorm, post_attention_layernorm;
  MLA self_attn;
  bool is_moe = false;
  SwiGLUMLP mlp;
  MoELayer moe;
  int unit = -1;  // norms, attention, dense MLP or router + shared experts (routed experts: moe.expert_units)
  Precision prec = Precision::FP32;  // of its GEMMs (set_precision)

  void init(ParamStore& ps, int layer, const ModelConfig& c, const ModelPlacement& placement);
  // The block's parameters into the current unit `unit_` (an MTP module adds its own first).
  void add_params(ParamStore& ps, int unit_, int layer, const ModelConfig& c, const ModelPlacement& placement);
  // cache_rows: the latent KV cache's rows of the N tokens, written when given (MLA::forward).
  void forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, const RopeTables& rt,
               BlockActs& a, float* load_E, float* cache_rows = nullptr) const;
  // Decoding step.n tokens with the latent KV cache (MLA::decode); a is scratch.
  void decode(const ParamStore& ps, float* y, const float* x, const LatentStep& step, float* cache,
              const float* kv_b_eff, BlockActs& a) const;
  // dx (assigned) from dy; parameter gradients accumulate.
  void backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T,
                const RopeTables& rt, BlockActs& a, float loss_scale) const;
  void set_precision(Precision p) {
    prec = p;
    self_attn.set_precision(p);
    mlp.set_precision(p);
    moe.set_precision(p);
  }

 private:
  void ensure_acts(int64_t N, BlockActs& a) const;
  // At bf16: t sized [N, D] as bf16, for a norm to write its rounded output into; else null.
  uint16_t* bf16_copy(Tensor& t, int64_t N) const;
  // At bf16: the rounded output the forward kept in t; else null.
  const uint16_t* kept_bf16(const Tensor& t) const;
  void feed_forward(const ParamStore& ps, float* y, const float* x, const float* attn_out, int64_t B, int64_t T,
                    BlockActs& a, float* load_E) const;
};

// A multi-token prediction module (DeepSeek-V3 report, section 2.2; model/mtp.cpp). Module k
// (1..mtp_depth) is Hugging Face layer L+k-1 and at position i reads h^{k-1}_i (the main model's
// last block output for k = 1, else module k-1's output) and the embedding of token t_{i+k}:
//   x = eh_proj(cat[enorm(embed_tokens(t_{i+k})), hnorm(h^{k-1}_i)])
//   h^k = block(x)   (the block of layer L+k-1: MoE when L+k-1 >= dense_layers, as in DeepSeek-V3)
//   logits_i = lm_head(shared_head.norm(h^k_i))  -> predicts t_{i+k+1}
// over positions i = 0 .. T-k-1 of each sequence. embed_tokens and lm_head are the main model's.
struct MTPActs {
  Tensor ids_N, targets_N;              // t_{i+k}, t_{i+k+1} on the compute device, [B*(T-k)]
  Tensor hin_ND, emb_ND, e_ND, e_rstd_N, hn_ND, hn_rstd_N, cat_N2D, x_ND, out_ND;
  Tensor xf_ND, xf_rstd_N, lse_N, losses_N;
  BlockActs block;
  int64_t bytes() const {
    return Tensor::total_bytes(ids_N, targets_N, hin_ND, emb_ND, e_ND, e_rstd_N, hn_ND, hn_rstd_N, cat_N2D, x_ND,
                               out_ND, xf_ND, xf_rstd_N, lse_N, losses_N) +
           block.bytes();
  }
};

struct MTPModule {
  RMSNorm enorm, hnorm, shared_head_norm;
  Linear eh_proj;
  Block block;  // its unit holds the four above too; its routed experts their own units
  int depth = 0;  // k
  MTPActs acts;

  void init(ParamStore& ps, int depth_k, const ModelConfig& c, const ModelPlacement& placement);
  void set_precision(Precision p) {
    eh_proj.prec = p;
    block.set_precision(p);
  }
};

struct ForwardStats {
  double loss = 0;      // mean cross-entropy (nats per token) of the main model
  double mtp_loss = 0;  // mean over the mtp_depth MTP modules of their cross-entropy (0 without MTP)
  double aux_loss = 0;  // sum over MoE layers of the balance loss
  double z_loss = 0;    // sum over MoE layers of the router z-loss
  int64_t tokens = 0;
  double top1_hits = 0;  // tokens whose target is the arg-max of its logits (counted on the device)
};

class DeepSeekV3 {
 public:
  explicit DeepSeekV3(const ModelConfig& c, const ModelPlacement& placement = {});
  const ModelConfig& config() const { return cfg_; }
  ParamStore& params() { return ps_; }
  const ParamStore& params() const { return ps_; }
  void set_recompute(bool on) { recompute_ = on; }
  const ModelPlacement& placement() const { return placement_; }
  // Distributed training (model/placement.h): who gathers parameter units, and how tokens reach
  // experts on other ranks. Both optional; neither owned.
  void set_unit_hooks(UnitHooks* hooks) { units_.set_hooks(hooks); }
  // The compute units in execution order (embedding, blocks, head) and the parameter units each
  // reads (model/unit_runner.h): what the hooks are called around.
  const std::vector<ComputeUnit>& compute_units() const { return units_.units(); }
  void set_expert_exchange(const ExpertExchange* ex);
  // parallel.fp8_dispatch (TokenDispatcher::fp8_dispatch); takes effect at fp8.
  void set_fp8_dispatch(bool on) {
    for (int l : moe_blocks_) blocks_[l].moe.dispatcher.fp8_dispatch = on;
    for (int k : mtp_moe_) mtp_[k].block.moe.dispatcher.fp8_dispatch = on;
  }
  // GEMM precision of every Linear: attention projections, dense MLPs, shared and routed experts.
  // Embedding, norms and the router stay f32, as in DeepSeek-V3; the LM head follows head_precision().
  void set_precision(Precision p) {
    precision_ = p;
    for (Block& b : blocks_) b.set_precision(p);
    for (MTPModule& m : mtp_) m.set_precision(p);
  }
  Precision precision() const { return precision_; }
  // The LM head's GEMMs: bf16 operands at bf16, as every other GEMM of the model then (and as
  // PyTorch's autocast and Megatron's --bf16 run the output layer); f32 otherwise, so fp8 keeps
  // DeepSeek-V3's higher-precision head. Logits, softmax and loss are f32 in every mode.
  Precision head_precision() const { return precision_ == Precision::BF16 ? Precision::BF16 : Precision::FP32; }

  // ids, targets [B*T]. Returns the losses and the top-1 hits; keeps activations for backward.
  // Expert loads are counted for the bias update only when count_load (training, not evaluation).
  // With model.mtp_depth > 0 the MTP modules run too (model/mtp.h); T must exceed mtp_depth.
  // doc_start (host, [B*T], data.document_mask) packs documents: token t of sequence b belongs to
  // the document that starts at position doc_start[b*T + t], attends only within it and takes its
  // RoPE position from that start, exactly as if the document were a sequence of its own. Null: one
  // causal sequence. (The MTP modules do not take document masks: config validation refuses both.)
  ForwardStats forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T, bool count_load = true,
                       const int32_t* doc_start = nullptr);
  // Evaluation: forward() of the main model only (no MTP modules) and, for every token, the rank of
  // its target among the logits (0 = the first arg-max; ranks < k are top-k hits), into ranks_N
  // (host, [B*T]).
  ForwardStats forward_ranked(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T, bool count_load,
                              int32_t* ranks_N, const int32_t* doc_start = nullptr);
  // Gradients of loss_scale * (loss + λ·mtp_loss + aux + z) accumulate into params().grads()
  // (λ: mtp_loss_weight(); mtp_loss is 0 after forward_ranked()).
  void backward(float loss_scale);
  // λ, the weight of the MTP loss (model.mtp_loss_weight; the trainer sets it per step from the
  // schedule, mtp_loss_weight_at()).
  void set_mtp_loss_weight(double w) { mtp_weight_ = w; }
  double mtp_loss_weight() const { return mtp_weight_; }
  const std::vector<MTPModule>& mtp_modules() const { return mtp_; }
  // Logits [B, V] of the last position of each sequence (for generation), on the host.
  Tensor last_logits(const int32_t* ids, int64_t B, int64_t T);
  // Generation with the latent KV cache (model/kv_cache.h). prefill: the normal forward over one
  // sequence's ids[T] that also fills cache slot `slot` (positions 0..T-1, replacing what it held);
  // returns the last position's logits [V] on the host.
  Tensor prefill(KVCache& cache, int64_t slot, const int32_t* ids, int64_t T);
  // One token per entry: ids[i] enters slot slots[i] at position cache.length[slot] (which then
  // grows by one), attending to the slot's cached positions and itself. A slot given k times takes
  // k consecutive positions (speculative verification), each attending to those before it.
  // Logits [n, V] on the host.
  Tensor decode(KVCache& cache, const int64_t* slots, const int32_t* ids, int64_t n);
  // Self-speculative decoding with MTP module 1 (needs model.mtp_depth > 0; launch/speculative.h).
  // Each of the n tokens ids (one slot, consecutive MTP positions from cache.mtp_length[slot]) is
  // t_{i+1} for the hidden state h_i in row first_row + j of the last prefill()/decode() (prefill
  // keeps only its last position's row; decode all n of its rows). Writes the MTP cache rows and
  // returns the MTP logits [n, V] (host): the draft for t_{i+2}.
  Tensor mtp_draft(KVCache& cache, int64_t slot, int64_t first_row, const int32_t* ids, int64_t n);
  // Cross-entropy of every position of the last forward(), [B*T] nats (-log p(targets[i] | ids[..i])
  // within its sequence), downloaded to the host: per-token log-likelihoods for scoring continuations.
  std::vector<float> token_losses() const;
  // Bytes of the activations the last forward() kept for backward: the residual stream, every
  // block's saved activations (one block's with recompute), the head's and the MTP modules'.
  // Measured from the tensors held, for `moe bench train` and to check `moe plan`'s estimate.
  int64_t activation_bytes() const;

  // Tokens routed to each expert since the last reset, [moe_layers, E], on the host (for logging,
  // the bias update and cross-rank reduction by the trainer). The MoE blocks of the MTP modules
  // come after the main model's, in depth order, and count in moe_layers().
  Tensor& expert_load() { return load_; }
  int moe_layers() const { return int(moe_blocks_.size() + mtp_moe_.size()); }
  const std::vector<Block>& blocks() const { return blocks_; }
  // Aux-loss-free balancing from expert_load(), then resets it.
  void update_router_bias(float rate);

 private:
  void add_compute_units();
  int block_cu(int l) const { return embed_cu_ + 1 + l; }
  // With a cache: the blocks also write its rows of `slot` (prefill; B == 1).
  // doc_start: forward()'s document starts (host), or null.
  void run_blocks(int64_t B, int64_t T, bool count_load, KVCache* cache = nullptr, int64_t slot = 0,
                  const int32_t* doc_start = nullptr);
  Tensor head_logits(const float* x, int64_t B, int64_t T);
  void upload_tokens(Tensor& dst, const int32_t* host, int64_t N);
  void final_norm(int64_t N);
  // losses_N and lse_N from xf_ND, in row chunks; with ranks (device, [N]) the target ranks too.
  void head_loss(int64_t N, int32_t* ranks = nullptr);
  void head_backward(float* dx, float loss_scale);
  // The LM head's cross-entropy over N rows of normed hidden states xf (row chunks); with ranks
  // (device, [N]) the target ranks too. Shared by the main model and the MTP modules.
  void head_rows_loss(const float* xf, const int32_t* targets, float* lse, float* losses, int64_t N, int32_t* ranks);
  // dxf[N,D] (assigned) and lm_head's gradient of scale * sum(losses) over the N rows.
  void head_rows_backward(float* dxf, const float* xf, const int32_t* targets, const float* lse, float scale,
                          int64_t N);
  // MTP (model/mtp.cpp): the modules' forward after the head, returning the mean of their losses,
  // and their backward, adding d(loss_scale·λ·mtp_loss)/d resid_[L] into dresid [N, D].
  void add_mtp_modules();
  double mtp_forward(const int32_t* ids, const int32_t* targets, bool count_load);
  void mtp_backward(float* dresid, float loss_scale);

  ModelConfig cfg_;
  ModelPlacement placement_;
  UnitRunner units_;
  int embed_unit_ = -1, head_unit_ = -1;  // parameter units
  int embed_cu_ = -1, head_cu_ = -1;      // compute units (block l: block_cu(l); MTP module k: head_cu_ + k)
  ParamStore ps_;
  int embed_tokens = -1, lm_head = -1;
  std::vector<Block> blocks_;
  std::vector<int> moe_blocks_;  // block index of each MoE layer
  std::vector<MTPModule> mtp_;   // model.mtp_depth modules (depth k = index + 1)
  std::vector<int> mtp_moe_;     // index into mtp_ of each MTP module whose block is MoE
  double mtp_weight_ = 0;        // λ
  bool mtp_ran_ = false;         // the last forward ran the MTP modules (backward follows it)
  RMSNorm norm_;
  RopeTables rope_;
  bool recompute_ = false;
  Precision precision_ = Precision::FP32;

  // Saved state of the last forward.
  int64_t B_ = 0, T_ = 0;
  int64_t scored_N_ = 0;            // rows of losses_N the head last wrote (forward()); 0 after last_logits()
  Tensor ids_N, targets_N;          // on the compute device
  std::vector<Tensor> resid_;      // resid_[l] = input of block l; resid_[L] = last block's output
  std::vector<BlockActs> acts_;    // one per block, or one shared when recomputing
  Tensor xf_ND, xf_rstd_N, lse_N, losses_N;
  BlockActs decode_acts_;  // scratch of decode()
  Tensor hidden_;          // last block's output rows of the last prefill() (its last position) or decode()
  struct LatentStepBuffers {
    Tensor cos, sin, offset, length;
  };
  void plan_latent_step(LatentStep& step, LatentStepBuffers& buf, const KVCache& cache,
                        const std::vector<int64_t>& base, const int64_t* slots, int64_t n) const;
  void keep_hidden(const float* x, int64_t n);
  // MTP module 1 over positions 0..T-2 of a prefilled sequence (its cache rows; mtp_length T-1).
  void mtp_prefill(KVCache& cache, int64_t slot, const int32_t* ids, int64_t T);
  Tensor load_;
  // The MoE layers' {aux, z} losses of this forward, summed on the compute device layer after
  // layer (MTP modules too) and read once by router_losses().
  Tensor router_losses_2_;
  void add_router_losses(const Router& r, const RouterActs& a);
  void router_losses(ForwardStats& s) const;
};

// Number of parameters, total and active per token (shared + K routed experts), for logging/MFU.
struct ParamCounts {
  int64_t total = 0, active = 0;
};
ParamCounts count_params(const ModelConfig& c);
// Training FLOPs per token (6 * active matmul params + causal attention), as in torch_ref.py.
double flops_per_token(const ModelConfig& c, int64_t seq_len);

}  // namespace moe
