// Self-speculative greedy decoding with the model's first MTP module (DeepSeek-V3 report, section
// 2.2 and its "speculative decoding" note): each step the main model verifies the last confirmed
// token together with the MTP module's draft of the token after it, in one decode pass over two
// consecutive positions of the KV cache. A draft equal to the main model's own arg-max is accepted
// (two tokens from one pass); otherwise its cache row is dropped and the main model's token taken.
// The output is the plain greedy decoding's (each token is the main model's arg-max given the
// same prefix); only the number of main-model passes changes.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace moe {

struct SpeculativeStats {
  int64_t drafted = 0, accepted = 0;  // drafts verified, and of them accepted
  int64_t main_passes = 0;            // decode passes of the main model (prefill not counted)
  double acceptance() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
};

// Greedy continuation of `prompt` by max_tokens tokens with the latent KV cache, one token per pass.
std::vector<int32_t> greedy_decode(DeepSeekV3& model, const std::vector<int32_t>& prompt, int64_t max_tokens);
// The same tokens, drafting with MTP module 1 (model.mtp_depth > 0, else a moe::Error).
std::vector<int32_t> speculative_greedy_decode(DeepSeekV3& model, const std::vector<int32_t>& prompt,
                                               int64_t max_tokens, SpeculativeStats* stats = nullptr);

}  // namespace moe
