// MixtureSampler: training windows drawn from several splits (data.mix) in proportion to their
// weights, as a pure function of (seed, global sample index), like BatchSampler.
//
// The global sample stream is cut into chunks of kMixChunk samples. Up to sample G, source s
// (all but the heaviest) has had floor(G p_s) samples (p_s its normalised weight), the heaviest
// the rest; so chunk c gives each source the difference of those counts at its two ends (exact
// proportions in the long run, within one sample per source at every chunk boundary). Inside a
// chunk, the order of the sources' slots is a Fisher-Yates shuffle keyed by (seed, c). The k-th
// sample a source gets is its own BatchSampler's sample k: every source runs through its epochs
// independently. A single source is its BatchSampler exactly (data.path).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "data_pipeline/shards.h"

namespace moe {

constexpr int64_t kMixChunk = 4096;

class MixtureSampler {
 public:
  // One sampler per split, with weights > 0 (at most kMaxMixSources of them).
  MixtureSampler(const std::vector<const TokenDataset*>& splits, const std::vector<double>& weights, int seq_len,
                 uint64_t seed);
  int sources() const { return int(samplers_.size()); }
  const BatchSampler& source(int s) const { return samplers_[size_t(s)]; }
  // Global sample g is sample `.second` of source `.first`.
  std::pair<int, int64_t> locate(int64_t g) const;
  // Global samples [first_sample, first_sample + B): tokens [B*(T+1)]; where each input token's
  // document starts within its window into doc_start [B*T] and the source of each window into
  // source [B] (either may be null).
  void fill(int64_t first_sample, int B, int32_t* tokens, int32_t* doc_start, int32_t* source) const;

 private:
  int64_t before(int s, int64_t G) const;  // samples of source s among the first G
  void build_chunk(int64_t c) const;

  std::vector<BatchSampler> samplers_;
  std::vector<double> p_;  // normalised weights
  int heaviest_ = 0;
  uint64_t chunk_seed_ = 0;
  int seq_len_;
  mutable int64_t cached_chunk_ = -1;
  mutable std::vector<uint8_t> slot_source_;  // of the cached chunk
  mutable std::vector<int64_t> slot_index_;   // the source's own sample index
};

}  // namespace moe
