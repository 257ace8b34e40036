// MLA decoding over the latent KV cache, one (token, head) row (single source: row.h explains R).
// The query is absorbed into the cache's space: q = [W_uk^T q_nope | q_pe] has the width C of a
// cache row [c_kv | k_pe], so a score is one dot product per cached position, and the output stays
// latent, o = sum_t p_t c_kv[t] (kv_lora values; W_uv is applied afterwards, once per head).
// The softmax is attention's (fast exp), so decoding reads the same probabilities as training.
#pragma once
#include <stdint.h>

#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"
#include "framework/kernels/softmax.h"

namespace moe::kern {

// o[L] = softmax(scale * rows q)[len] . rows[:, :L]; q [C], rows [len, C] (the positions the token
// sees, itself included); p is scratch of len floats.
template <class R>
MOE_HD inline void latent_attention_row(R& r, float* o, float* p, const float* q, const float* rows, int64_t len,
                                        int64_t C, int64_t L, float scale) {
  for (int64_t t = r.lane(); t < len; t += r.width()) {
    const float* row = rows + t * C;
    float s = 0.f;
    for (int64_t c = 0; c < C; ++c) s += q[c] * row[c];
    p[t] = s * scale;
  }
  softmax_row_forward(r, p, p, len, len, /*fast=*/true);
  r.sync();  // every lane reads every probability below
  for (int64_t j = r.lane(); j < L; j += r.width()) {
    float acc = 0.f;
    for (int64_t t = 0; t < len; ++t) acc += p[t] * rows[t * C + j];
    o[j] = acc;
  }
}

}  // namespace moe::kern
