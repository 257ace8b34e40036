// Causal attention core on the CPU, the shape MLA needs (any head layout, dqk != dv), computed in
// query blocks with the log-sum-exp of each row kept instead of the probabilities (backward
// recomputes them), so memory is O(B H T), not O(B H T^2).
#pragma once
#include <cstdint>

namespace moe {

// The layout of the attention core's operands: for sequence b, position t and head h, the vector
// of q starts at q + (b*T + t) * q.ld + h * q.hs (dqk elements), likewise k (dqk), v (dv), o (dv).
// MLA: q, k [N, H, dqk]; v sits inside kv_b_proj's output [N, H, nope + dv] at offset nope.
struct AttentionLayout {
  int64_t B = 0, T = 0, H = 0, dqk = 0, dv = 0;
  int64_t q_ld = 0, q_hs = 0, k_ld = 0, k_hs = 0, v_ld = 0, v_hs = 0, o_ld = 0, o_hs = 0;
  float scale = 1.f;  // applied to q k^T before the causal softmax
  // The GEMMs read bf16 operands (q, k, v, dO, and P and dS per block) with f32 accumulation, as a
  // flash-attention kernel at bf16 does (precision bf16); else f32 throughout.
  bool bf16 = false;
  // data.document_mask: doc_start[b*T + t] (device memory, [B*T]) is the position where the
  // document of query t of sequence b starts; the query sees keys doc_start..t only. Null: every
  // query sees keys 0..t.
  const int32_t* doc_start = nullptr;

  // Packed rows, as the model keeps them: q and k [B*T, H, dqk], v and o [B*T, H, dv].
  static AttentionLayout dense(int64_t B, int64_t T, int64_t H, int64_t dqk, int64_t dv, float scale) {
    AttentionLayout l;
    l.B = B, l.T = T, l.H = H, l.dqk = dqk, l.dv = dv, l.scale = scale;
    l.q_ld = l.k_ld = H * dqk, l.q_hs = l.k_hs = dqk;
    l.v_ld = l.o_ld = H * dv, l.v_hs = l.o_hs = dv;
    return l;
  }

  // The first key query t of sequence b sees.
  int64_t first_key(int64_t b, int64_t t) const { return doc_start ? doc_start[b * T + t] : 0; }

  // Where sequence b, head h, position 0 starts in q, k, v and o.
  int64_t q_at(int64_t b, int64_t h) const { return b * T * q_ld + h * q_hs; }
  int64_t k_at(int64_t b, int64_t h) const { return b * T * k_ld + h * k_hs; }
  int64_t v_at(int64_t b, int64_t h) const { return b * T * v_ld + h * v_hs; }
  int64_t o_at(int64_t b, int64_t h) const { return b * T * o_ld + h * o_hs; }
};

// o = softmax(scale q k^T, causal, within documents when l.doc_start) v; lse[B, H, T] saved.
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const AttentionLayout& l);
// dq, dk, dv assigned, from dout and the saved lse.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, const AttentionLayout& l);
// The same on q, k, v kept as bf16 bits (needs l.bf16): the f32 ops' bits on their values. o, the
// forward's output in bf16, is for fused backward kernels (backend_ops.inc); this core ignores it.
void attention_forward_bf16(float* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            const AttentionLayout& l);
void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const uint16_t* o, const uint16_t* q,
                             const uint16_t* k, const uint16_t* v, const float* lse, const AttentionLayout& l);

// MLA decoding over the latent KV cache (framework/backend_ops.inc documents it).
void latent_attention(float* o, const float* q, const float* cache, const int64_t* row_offset, const int64_t* length,
                      int64_t n, int64_t H, int64_t C, int64_t L, int64_t max_len, float scale);

}  // namespace moe
