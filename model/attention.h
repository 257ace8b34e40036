// Multi-head Latent Attention (DeepSeek-V2/V3), the naive (non-absorbed) training form, matching
// Hugging Face DeepseekV3Attention:
//   q   = q_b_proj(q_a_layernorm(q_a_proj(x)))            [N, H, nope+rope]
//   ckv = kv_a_proj_with_mqa(x) = [kv_c | k_pe]            [N, kv_lora + rope]
//   kv  = kv_b_proj(kv_a_layernorm(kv_c)) = [k_nope | v]  [N, H, nope+v]
//   q_pe, k_pe get RoPE (k_pe is one head shared by all), k = [k_nope | k_pe]
//   o   = softmax(q k^T * (nope+rope)^-0.5, causal) v      [N, H, v]
//   y   = o_proj(o)
// The attention core keeps only the log-sum-exp of each row and recomputes probabilities in
// backward, so memory is O(B H T), not O(B H T^2).
// Letters: B batch, T sequence, N = B*T tokens, H heads, D hidden, Q q_lora_rank, L kv_lora_rank,
// R rope dims, d = nope + rope.
#pragma once
#include <string>
#include <vector>

#include "framework/attention.h"
#include "framework/config.h"
#include "framework/scratch.h"
#include "model/kv_cache.h"
#include "model/layers.h"

namespace moe {

struct MLAActs {
  // The norms' outputs and o are read only by the projections after them, q, k and v only by the
  // attention core (which rounds them at bf16): bf16 at bf16 (kept(), model/layers.h), else f32.
  Tensor qa_NQ, qa_norm_NQ, qa_rstd_N;  // q low-rank path (empty when q_lora_rank == 0)
  Tensor q_NHd;                         // queries, RoPE applied
  Tensor kv_c_NL, kv_norm_NL, kv_rstd_N;
  Tensor v_NHv;    // values: kv_b_proj's output per head is [k_nope | v]; k_nope lives on in k
  Tensor k_NHd;    // keys, RoPE applied to the shared rope part
  Tensor o_NHv;    // attention output, o_proj's input [N, H * vdim]
  Tensor lse_BHT;
  int64_t bytes() const {
    return Tensor::total_bytes(qa_NQ, qa_norm_NQ, qa_rstd_N, q_NHd, kv_c_NL, kv_norm_NL, kv_rstd_N, v_NHv, k_NHd,
                               o_NHv, lse_BHT);
  }
};

// The positions of a forward's tokens: RoPE tables of positions 0..T-1, and under a document mask
// (data.document_mask) each token's own position (counted from its document's start) and the
// first key its attention sees.
struct RopeTables {
  Tensor cos_TR2, sin_TR2;  // [T, R/2], on the device
  int64_t T = 0;
  void build(int64_t T_, int dim, double theta);
  // doc_start (host, [B*T], or null for plain causal windows): where the document of each token
  // of each sequence starts. Tokens then get positions t - doc_start and see keys doc_start..t.
  void set_documents(const int32_t* doc_start, int64_t B);
  // rope_apply (backend_ops.inc) over [B*T_x] token rows at their positions (T_x <= T).
  void apply(float* x, int64_t B, int64_t T_x, int64_t heads, int64_t row_stride, int64_t head_stride, int dim,
             bool backward) const;
  // The attention's doc_start (device, [B*T]), or null without a document mask.
  const int32_t* doc_start() const { return documents_ ? doc_start_N_.data<int32_t>() : nullptr; }

 private:
  std::vector<float> host_cos_, host_sin_;  // [T, R/2]
  bool documents_ = false;
  Tensor cos_NR2_, sin_NR2_, doc_start_N_;  // per token, under a document mask
};

struct MLA {
  Linear q_a_proj, q_b_proj, q_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj;
  RMSNorm q_a_layernorm, kv_a_layernorm;
  int64_t H = 0, nope = 0, rope = 0, vdim = 0, q_lora = 0, kv_lora = 0, hidden = 0;

  void init(ParamStore& ps, const std::string& prefix, const ModelConfig& c);
  // y[N,D] = attn(x[N,D]) for B sequences of T tokens. x's E4M3 rows (when given) serve both
  // projections of x; at fp8 the q_a and kv_a norms quantise their outputs for q_b and kv_b.
  // With cache_rows ([N, kv_lora + rope]): also the latent KV cache's rows of the N tokens
  // (model/kv_cache.h).
  void forward(const ParamStore& ps, float* y, Activation x, int64_t B, int64_t T, const RopeTables& rt,
               MLAActs& a, float* cache_rows = nullptr) const;
  // Decoding with the latent cache (model/kv_cache.h): y[n,D] for n new tokens, each at its own
  // slot and position; their cache rows are written first, then each attends to its slot's rows.
  // `a` is scratch here (nothing is kept for backward).
  void decode(const ParamStore& ps, float* y, Activation x, const LatentStep& step, float* cache,
              const float* kv_b_eff, MLAActs& a) const;
  // dx[N,D] += d attn / dx (accumulated); parameter gradients accumulate.
  // x as in forward (its bf16 rounding, when given, serves both projections' weight gradients).
  void backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t B, int64_t T,
                const RopeTables& rt, MLAActs& a) const;
  // GEMM precision of the projections; at bf16 the attention core's GEMMs read bf16 operands too
  // (AttentionLayout::bf16).
  void set_precision(Precision p) {
    for (Linear* l : {&q_a_proj, &q_b_proj, &q_proj, &kv_a_proj_with_mqa, &kv_b_proj, &o_proj}) l->prec = p;
  }

 private:
  AttentionLayout attention_layout(int64_t B, int64_t T, const RopeTables& rt) const;
  void project_queries(const ParamStore& ps, Activation x, int64_t N, MLAActs& a, float* q) const;
  Activation project_latent(const ParamStore& ps, float* ckv, Activation x, int64_t N, MLAActs& a,
                            const ScratchFp8Rows& kvq, Tensor& kv_f32, float* latent) const;
};

}  // namespace moe
