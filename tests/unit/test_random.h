// Random test inputs and orders shared by the kernel and op tests.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "framework/kernels/cast.h"

namespace moe::test {

// n normal values with standard deviation `scale`, the same for the same seed.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// x rounded to bf16 (nearest even), as bits: the inputs of the ops on bf16 operands.
inline std::vector<uint16_t> bf16_bits(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = kern::f32_to_bf16_bits(x[i]);
  return b;
}

// Runs f(i) for i in [0, n) in a shuffled order (the same for the same seed): a kernel must not
// depend on the order its elements run in.
template <class F>
void run_shuffled(int64_t n, F f, uint32_t seed = 7) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  for (int64_t i : order) f(i);
}

}  // namespace moe::test
