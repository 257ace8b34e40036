// BatchSampler: window w of a split is tokens [w*T, w*T + T + 1) — T inputs plus the shifted
// targets, overlapping the next window by one token. Epoch e visits the n windows in the order of
// a Fisher-Yates shuffle whose i-th swap partner comes from rng_bits(seed, e, i), so any epoch's
// order can be rebuilt from (seed, e) alone, on any rank, without replaying earlier epochs.
#include "data_pipeline/shards.h"
#include "framework/error.h"
#include "framework/rng.h"

namespace moe {
namespace {

// Uniform in [0, bound) from 64 random bits (Lemire's multiply-shift; bias below 2^-40 for any
// split that fits on disk).
int64_t below(uint64_t bits, uint64_t bound) { return int64_t((unsigned __int128)bits * bound >> 64); }

}  // namespace

BatchSampler::BatchSampler(const TokenDataset& data, int seq_len, uint64_t seed)
    : data_(&data), seq_len_(seq_len), seed_(seed) {
  if (seq_len < 1) throw error("seq_len ", seq_len, ": expected at least 1");
  int64_t n = data.num_tokens();
  windows_ = n > 0 ? (n - 1) / seq_len : 0;
  if (windows_ < 1)
    throw error(data.dir(), ": split has ", n, " tokens, fewer than seq_len+1 = ", int64_t(seq_len) + 1,
                " (expected more data or a shorter data.seq_len)");
}

int64_t BatchSampler::windows_per_epoch() const { return windows_; }

void BatchSampler::fill(int64_t first_sample, int B, int32_t* tokens, int32_t* doc_start) const {
  MOE_CHECK(first_sample >= 0 && B >= 0, "first_sample ", first_sample, ", B ", B);
  const int64_t T = seq_len_;
  for (int b = 0; b < B; ++b) {
    int64_t g = first_sample + b, epoch = g / windows_;
    if (epoch != cached_epoch_) {
      perm_.resize(size_t(windows_));
      for (int64_t i = 0; i < windows_; ++i) perm_[size_t(i)] = i;
      for (int64_t i = windows_ - 1; i > 0; --i)
        std::swap(perm_[size_t(i)], perm_[size_t(below(rng_bits(seed_, uint64_t(epoch), uint64_t(i)), uint64_t(i + 1)))]);
      cached_epoch_ = epoch;
    }
    const int64_t begin = perm_[size_t(g % windows_)] * T;
    data_->read(begin, T + 1, tokens + int64_t(b) * (T + 1));
    if (doc_start) data_->document_starts(begin, T, doc_start + int64_t(b) * T);
  }
}

}  // namespace moe
