// Held-out evaluation shared by `moe train` (every eval_every steps) and `moe eval`: mean
// cross-entropy over consecutive windows of a split, from the start, so every call on the same
// data sees the same tokens.
#pragma once
#include <cstdint>
#include <vector>

#include "data_pipeline/shards.h"
#include "model/model.h"

namespace moe {

struct EvalResult {
  double loss = 0;           // nats per token
  double perplexity = 0;
  double bits_per_byte = 0;  // loss * tokens / bytes / ln 2, bytes of the decoded targets; NaN when
                             // the data does not name its tokenizer (a bare Megatron pair)
  int64_t tokens = 0;
};

// Bytes each token id decodes to (for bits per byte); from the split's tokenizer.
std::vector<int32_t> token_byte_lengths(const TokenDataset& data);

// Windows [i*T, i*T + T + 1) for i < batches*B (all windows when batches <= 0). In a run with
// several ranks, rank r evaluates every world-th batch and the sums are combined by the caller's
// reduce (pass nullptr for one process).
EvalResult evaluate(DeepSeekV3& model, const TokenDataset& data, const std::vector<int32_t>& token_bytes, int B,
                    int T, int64_t batches, int rank = 0, int world = 1,
                    void (*reduce)(double*, int, void*) = nullptr, void* reduce_ctx = nullptr);

}  // namespace moe
