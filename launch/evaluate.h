// Held-out evaluation shared by `moe train` (every eval_every steps) and `moe eval`: mean
// cross-entropy over consecutive windows of a split, from the start, so every call on the same
// data sees the same tokens; for `moe eval` also top-1/top-5 next-token accuracy and the expert
// load on that data.
#pragma once
#include <cstdint>
#include <functional>
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
  int64_t windows = 0;       // sequences of T tokens evaluated
  double seconds = 0;        // wall time of this rank's forwards
  // With EvalOptions::accuracy: the fraction of tokens whose target is the arg-max of the logits
  // (top1) or among the 5 largest (top5); NaN otherwise.
  double top1 = 0, top5 = 0;
  // With EvalOptions::expert_load: per MoE layer, the busiest expert's tokens over the mean
  // (1 = perfectly balanced), and the worst layer's; empty / NaN otherwise.
  std::vector<double> load_max_mean;
  double load_max_mean_worst = 0;
};

// Sums `n` doubles over the ranks of a job, the same result on every rank.
using EvalReduce = std::function<void(double* x, int n)>;

struct EvalOptions {
  int B = 1, T = 1;       // sequences per forward, tokens per sequence
  int64_t batches = 0;    // at most this many batches of B windows (0: the whole split)
  int rank = 0, world = 1;
  EvalReduce reduce;      // null for one process
  bool accuracy = false;     // top-1/top-5 (downloads each batch's target ranks)
  bool expert_load = false;  // counts routing into model.expert_load(), which must start at zero
  bool document_mask = false;  // attention within the split's documents (data.document_mask)
  // Called on every rank after each of its forwards: batches done by the whole job (an estimate
  // counting every rank's like this one's), of total.
  std::function<void(int64_t done, int64_t total)> progress;
};

// Bytes each token id decodes to (for bits per byte); from the split's tokenizer.
std::vector<int32_t> token_byte_lengths(const TokenDataset& data);

// Windows [i*T, i*T + T + 1) for i < batches*B (all windows when batches <= 0). In a run with
// several ranks, rank r evaluates every world-th batch and the sums are combined by the reduce.
EvalResult evaluate(DeepSeekV3& model, const TokenDataset& data, const std::vector<int32_t>& token_bytes,
                    const EvalOptions& opt);

}  // namespace moe
