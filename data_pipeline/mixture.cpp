#include "data_pipeline/mixture.h"

#include <cmath>

#include "framework/config.h"
#include "framework/error.h"
#include "framework/rng.h"

namespace moe {

MixtureSampler::MixtureSampler(const std::vector<const TokenDataset*>& splits, const std::vector<double>& weights,
                               int seq_len, uint64_t seed)
    : chunk_seed_(rng_bits(seed, hash_name("data.mix chunks"), 0)), seq_len_(seq_len) {
  MOE_CHECK(!splits.empty() && splits.size() == weights.size() && splits.size() <= kMaxMixSources,
            splits.size(), " splits, ", weights.size(), " weights");
  double total = 0;
  for (double w : weights) {
    MOE_CHECK(w > 0, "weight ", w);
    total += w;
  }
  for (size_t s = 0; s < splits.size(); ++s) {
    // Source 0 keeps the run's seed: a one-source mixture is that source's BatchSampler.
    const uint64_t source_seed = s == 0 ? seed : rng_bits(seed, hash_name("data.mix source"), s);
    samplers_.emplace_back(*splits[s], seq_len, source_seed);
    p_.push_back(weights[s] / total);
    if (weights[s] > weights[size_t(heaviest_)]) heaviest_ = int(s);
  }
}

int64_t MixtureSampler::before(int s, int64_t G) const {
  if (s != heaviest_) return int64_t(std::floor(double(G) * p_[size_t(s)]));
  int64_t rest = G;
  for (int o = 0; o < sources(); ++o)
    if (o != heaviest_) rest -= before(o, G);
  return rest;
}

// The heaviest source has p >= 1/S, so its share of a chunk, at least 4096/S - (S-1), stays
// positive for S <= 64.
void MixtureSampler::build_chunk(int64_t c) const {
  slot_source_.clear();
  std::vector<int64_t> next(static_cast<size_t>(sources()));
  for (int s = 0; s < sources(); ++s) {
    next[size_t(s)] = before(s, c * kMixChunk);
    const int64_t n = before(s, (c + 1) * kMixChunk) - next[size_t(s)];
    MOE_CHECK(n >= 0, "mixture chunk ", c, " gives source ", s, " ", n, " samples");
    slot_source_.insert(slot_source_.end(), size_t(n), uint8_t(s));
  }
  MOE_CHECK(int64_t(slot_source_.size()) == kMixChunk);
  for (int64_t i = kMixChunk - 1; i > 0; --i) {
    const uint64_t j = uint64_t((unsigned __int128)rng_bits(chunk_seed_, uint64_t(c), uint64_t(i)) * uint64_t(i + 1) >> 64);
    std::swap(slot_source_[size_t(i)], slot_source_[size_t(j)]);
  }
  slot_index_.resize(slot_source_.size());
  for (size_t i = 0; i < slot_source_.size(); ++i) slot_index_[i] = next[slot_source_[i]]++;
  cached_chunk_ = c;
}

std::pair<int, int64_t> MixtureSampler::locate(int64_t g) const {
  MOE_CHECK(g >= 0, "sample ", g);
  if (sources() == 1) return {0, g};
  const int64_t c = g / kMixChunk, i = g % kMixChunk;
  if (c != cached_chunk_) build_chunk(c);
  return {slot_source_[size_t(i)], slot_index_[size_t(i)]};
}

void MixtureSampler::fill(int64_t first_sample, int B, int32_t* tokens, int32_t* doc_start, int32_t* source) const {
  const int64_t T = seq_len_;
  for (int b = 0; b < B; ++b) {
    const auto [s, k] = locate(first_sample + b);
    samplers_[size_t(s)].fill(k, 1, tokens + b * (T + 1), doc_start ? doc_start + b * T : nullptr);
    if (source) source[b] = s;
  }
}

}  // namespace moe
