#include "launch/speculative.h"

#include <algorithm>

#include "framework/bf16_weights.h"
#include "framework/error.h"
#include "model/kv_cache.h"

namespace moe {

namespace {

int32_t argmax_row(const Tensor& logits, int64_t row) {
  const int64_t V = logits.dim(1);
  const float* z = logits.f32() + row * V;
  return int32_t(std::max_element(z, z + V) - z);
}

}  // namespace

std::vector<int32_t> greedy_decode(DeepSeekV3& model, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  std::vector<int32_t> out;
  if (max_tokens <= 0) return out;
  const int64_t P = int64_t(prompt.size());
  const Bf16WeightScope weights_held;
  KVCache cache(model, 1, P + max_tokens);
  Tensor logits = model.prefill(cache, 0, prompt.data(), P);
  const int64_t slot = 0;
  while (true) {
    int32_t t = argmax_row(logits, 0);
    out.push_back(t);
    if (int64_t(out.size()) == max_tokens) return out;
    logits = model.decode(cache, &slot, &t, 1);
  }
}

std::vector<int32_t> speculative_greedy_decode(DeepSeekV3& model, const std::vector<int32_t>& prompt,
                                               int64_t max_tokens, SpeculativeStats* stats) {
  if (model.config().mtp_depth < 1)
    throw error("speculative decoding drafts with the MTP module: the model has model.mtp_depth 0");
  SpeculativeStats st;
  std::vector<int32_t> out;
  if (max_tokens <= 0) return out;
  const int64_t P = int64_t(prompt.size());
  const Bf16WeightScope weights_held;
  KVCache cache(model, 1, P + max_tokens + 1);
  // `a`: the last confirmed token, not yet in the main cache; `draft`: MTP's guess of the next.
  int32_t a = argmax_row(model.prefill(cache, 0, prompt.data(), P), 0);
  out.push_back(a);
  Tensor draft = model.mtp_draft(cache, 0, 0, &a, 1);
  const int64_t slots[2] = {0, 0};
  while (int64_t(out.size()) < max_tokens) {
    const int32_t d = argmax_row(draft, draft.dim(0) - 1);
    const int32_t pair[2] = {a, d};
    Tensor logits = model.decode(cache, slots, pair, 2);  // rows: after a, after d
    ++st.main_passes;
    ++st.drafted;
    const int32_t b = argmax_row(logits, 0);
    if (b == d) {
      ++st.accepted;
      const int32_t c = argmax_row(logits, 1);
      out.push_back(d);
      if (int64_t(out.size()) == max_tokens) break;
      out.push_back(c);
      const int32_t next[2] = {d, c};  // MTP positions of a and d: t_{i+1} = d, then c
      draft = model.mtp_draft(cache, 0, 0, next, 2);
      a = c;
    } else {
      --cache.length[0];  // d's row: a wrong draft's
      out.push_back(b);
      draft = model.mtp_draft(cache, 0, 0, &b, 1);
      a = b;
    }
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace moe
