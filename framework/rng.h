// Counter-based random numbers: every value is a pure function of (seed, stream, index), so a
// parameter's initial values depend only on (seed, parameter name, element index) — the same on
// any number of ranks and in any order of evaluation. The mixer is SplitMix64's finaliser applied to
// a combined key (statistically strong enough for initialisation, dropout and sampling).
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

#include "framework/kernels/hd.h"

namespace moe {

MOE_HD inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Stable 64-bit FNV-1a of a name: the stream id of a parameter.
inline uint64_t hash_name(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

MOE_HD inline uint64_t rng_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed ^ mix64(stream)) + index);
}

// Uniform in (0, 1): 24 random bits, never exactly 0 (safe for log).
MOE_HD inline float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (float((rng_bits(seed, stream, index) >> 40)) + 0.5f) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on two uniforms drawn from counters 2i and 2i+1.
MOE_HD inline float rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  float u1 = rng_uniform(seed, stream, 2 * index), u2 = rng_uniform(seed, stream, 2 * index + 1);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

}  // namespace moe
