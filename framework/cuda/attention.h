// The causal attention core on the GPU (framework/attention.h's layout and semantics): per sequence,
// strided-batched cuBLASLt GEMMs over the heads (a head is a batch entry: batch stride hs, row
// stride ld), S = scale q k^T into an [heads, T, T] buffer, the causal softmax rows of
// kern::softmax_row_* (the CPU's attention rows, fast exp included), o = P v. Only the log-sum-exp
// is kept; backward recomputes P from it. Heads go in chunks so that the T x T buffers stay within
// kAttentionScratchBytes each. The full T x T products are computed and the upper triangle masked
// (the CPU skips most of it in query blocks). At bf16, cuDNN's fused attention runs instead where
// it takes the shape (cudnn_attention.h, docs/cuda.md).
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

#include "framework/attention.h"

namespace moe::cuda {

constexpr size_t kAttentionScratchBytes = size_t(256) << 20;

// Heads per chunk for sequences of T positions (at least 1).
int64_t attention_heads_per_chunk(int64_t H, int64_t T);

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const AttentionLayout& l,
                       cudaStream_t stream = nullptr);
// dq, dk, dv assigned (in the layouts of q, k, v).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, const AttentionLayout& l, cudaStream_t stream = nullptr);
// On q, k, v kept as bf16 (l.bf16): cuDNN's fused attention where it takes the layout
// (cudnn_attention.h; checked once per shape against the path below, which it falls back to),
// else the GEMMs above reading q, k, v in place of the copies they cast. Backward's o is the
// forward's output in bf16 (o's layout), which the fused backward reads.
void attention_forward_bf16(float* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            const AttentionLayout& l, cudaStream_t stream = nullptr);
void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const uint16_t* o, const uint16_t* q,
                             const uint16_t* k, const uint16_t* v, const float* lse, const AttentionLayout& l,
                             cudaStream_t stream = nullptr);

// MLA decoding over the latent KV cache: one block per (token, head), kern::latent_attention_row.
void latent_attention(float* o, const float* q, const float* cache, const int64_t* row_offset, const int64_t* length,
                      int64_t n, int64_t H, int64_t C, int64_t L, int64_t max_len, float scale,
                      cudaStream_t stream = nullptr);

}  // namespace moe::cuda
