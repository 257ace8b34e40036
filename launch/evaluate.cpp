#include "launch/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "data_pipeline/tokenizer.h"
#include "framework/bf16_weights.h"
#include "framework/error.h"

namespace moe {

std::vector<int32_t> token_byte_lengths(const TokenDataset& data) {
  // A bare Megatron .bin/.idx pair does not say which tokenizer made it: no bytes, no bits/byte.
  if (data.tokenizer_name().empty()) return {};
  auto tok = make_tokenizer(data.tokenizer_name());
  std::vector<int32_t> len(size_t(data.vocab_size()));
  for (int64_t i = 0; i < data.vocab_size(); ++i) len[i] = int32_t(tok->token_text(uint32_t(i)).size());
  return len;
}

namespace {

// What the ranks add up: loss * tokens, tokens, bytes, windows, top-1 hits, top-5 hits, then the
// expert loads [moe_layers * E].
enum Sum { kLoss, kTokens, kBytes, kWindows, kTop1, kTop5, kLoads };

}  // namespace

EvalResult evaluate(DeepSeekV3& model, const TokenDataset& data, const std::vector<int32_t>& token_bytes,
                    const EvalOptions& opt) {
  const int B = opt.B, T = opt.T, world = opt.world;
  const int64_t windows = (data.num_tokens() - 1) / T;
  if (windows < 1)
    throw error(data.dir(), ": split has ", data.num_tokens(), " tokens, fewer than seq_len+1 = ", T + 1);
  int64_t total_batches = (windows + B - 1) / B;
  if (opt.batches > 0) total_batches = std::min(total_batches, opt.batches);
  const int64_t E = model.config().routed_experts, layers = model.moe_layers();
  std::vector<double> sums(size_t(kLoads + (opt.expert_load ? layers * E : 0)), 0.0);
  std::vector<int32_t> window(size_t(T + 1)), ids, tgt, ranks, doc_start;
  const auto start = std::chrono::steady_clock::now();
  // Every rank runs the same number of forwards: under FSDP and expert parallelism a forward is
  // collective. A rank past the last batch re-runs batch 0 and ignores the result.
  const int64_t rounds = (total_batches + world - 1) / world;
  const Bf16WeightScope weights_held;  // the weights hold still during an evaluation
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * world + opt.rank;
    const bool counted = b < total_batches;
    int64_t first = counted ? b * B : 0, n = std::min<int64_t>(B, windows - first);
    ids.resize(size_t(n * T));
    tgt.resize(size_t(n * T));
    for (int64_t i = 0; i < n; ++i) {
      data.read((first + i) * T, T + 1, window.data());
      std::copy(window.begin(), window.end() - 1, ids.begin() + i * T);
      std::copy(window.begin() + 1, window.end(), tgt.begin() + i * T);
      if (opt.document_mask) {
        doc_start.resize(size_t(n * T));
        data.document_starts((first + i) * T, T, doc_start.data() + i * T);
      }
    }
    ranks.resize(opt.accuracy ? size_t(n * T) : 0);
    ForwardStats s = model.forward_ranked(ids.data(), tgt.data(), n, T, opt.expert_load && counted,
                                          opt.accuracy ? ranks.data() : nullptr,
                                          opt.document_mask ? doc_start.data() : nullptr);
    if (opt.progress) opt.progress(std::min(total_batches, (round + 1) * world), total_batches);
    if (!counted) continue;
    sums[kLoss] += s.loss * double(n * T);
    sums[kTokens] += double(n * T);
    sums[kWindows] += double(n);
    if (!token_bytes.empty())
      for (int32_t t : tgt) sums[kBytes] += token_bytes[t];
    for (int32_t r : ranks) {
      sums[kTop1] += r < 1;
      sums[kTop5] += r < 5;
    }
  }
  EvalResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (opt.expert_load) {
    const float* load = model.expert_load().f32();
    std::copy(load, load + layers * E, sums.begin() + kLoads);
    model.expert_load().zero_();
  }
  if (opt.reduce) opt.reduce(sums.data(), int(sums.size()));
  r.tokens = int64_t(sums[kTokens]);
  r.windows = int64_t(sums[kWindows]);
  r.loss = sums[kTokens] > 0 ? sums[kLoss] / sums[kTokens] : 0;
  r.perplexity = std::exp(r.loss);
  r.bits_per_byte = sums[kBytes] > 0 ? sums[kLoss] / sums[kBytes] / std::log(2.0) : std::nan("");
  r.top1 = opt.accuracy && sums[kTokens] > 0 ? sums[kTop1] / sums[kTokens] : std::nan("");
  r.top5 = opt.accuracy && sums[kTokens] > 0 ? sums[kTop5] / sums[kTokens] : std::nan("");
  r.load_max_mean_worst = std::nan("");
  if (opt.expert_load) {
    for (int64_t l = 0; l < layers; ++l) {
      const double* load = sums.data() + kLoads + l * E;
      double total = 0, most = 0;
      for (int64_t e = 0; e < E; ++e) {
        total += load[e];
        most = std::max(most, load[e]);
      }
      r.load_max_mean.push_back(total > 0 ? most / (total / double(E)) : std::nan(""));
    }
    if (!r.load_max_mean.empty())
      r.load_max_mean_worst = *std::max_element(r.load_max_mean.begin(), r.load_max_mean.end());
  }
  return r;
}

}  // namespace moe
