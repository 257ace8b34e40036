#include "launch/evaluate.h"

#include <algorithm>
#include <cmath>

#include "data_pipeline/tokenizer.h"
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

EvalResult evaluate(DeepSeekV3& model, const TokenDataset& data, const std::vector<int32_t>& token_bytes, int B,
                    int T, int64_t batches, int rank, int world, void (*reduce)(double*, int, void*),
                    void* reduce_ctx) {
  const int64_t windows = (data.num_tokens() - 1) / T;
  if (windows < 1)
    throw error(data.dir(), ": split has ", data.num_tokens(), " tokens, fewer than seq_len+1 = ", T + 1);
  int64_t total_batches = (windows + B - 1) / B;
  if (batches > 0) total_batches = std::min(total_batches, batches);
  std::vector<int32_t> window(size_t(T + 1)), ids, tgt;
  double sums[3] = {0, 0, 0};  // loss * tokens, tokens, bytes
  // Every rank runs the same number of forwards: under FSDP and expert parallelism a forward is
  // collective. A rank past the last batch re-runs batch 0 and ignores the result.
  const int64_t rounds = (total_batches + world - 1) / world;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * world + rank;
    const bool counted = b < total_batches;
    int64_t first = counted ? b * B : 0, n = std::min<int64_t>(B, windows - first);
    ids.resize(size_t(n * T));
    tgt.resize(size_t(n * T));
    for (int64_t i = 0; i < n; ++i) {
      data.read((first + i) * T, T + 1, window.data());
      std::copy(window.begin(), window.end() - 1, ids.begin() + i * T);
      std::copy(window.begin() + 1, window.end(), tgt.begin() + i * T);
    }
    ForwardStats s = model.forward(ids.data(), tgt.data(), n, T, /*count_load=*/false);
    if (!counted) continue;
    sums[0] += s.loss * double(n * T);
    sums[1] += double(n * T);
    if (!token_bytes.empty())
      for (int32_t t : tgt) sums[2] += token_bytes[t];
  }
  if (reduce) reduce(sums, 3, reduce_ctx);
  EvalResult r;
  r.tokens = int64_t(sums[1]);
  r.loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
  r.perplexity = std::exp(r.loss);
  r.bits_per_byte = sums[2] > 0 ? sums[0] / sums[2] / std::log(2.0) : std::nan("");
  return r;
}

}  // namespace moe
