// Random test inputs shared by the kernel and op tests.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace moe::test {

// n normal values with standard deviation `scale`, the same for the same seed.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace moe::test
