#include "framework/bf16_weights.h"

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "framework/bf16_gemm.h"
#include "framework/profiler.h"

namespace moe {
namespace {

struct Kept {
  KeptCopy copy;
  int64_t bytes = 0;
};

struct Cache {
  std::mutex mu;
  int open_scopes = 0;
  // Ordered by address, so forgetting a range is one lower_bound. Keyed by (address, size, form):
  // the same address read with another size is another matrix (a prefix of a unit, say).
  std::map<std::tuple<const float*, int64_t, WeightForm>, Kept> copies;
  int64_t bytes = 0;
};

Cache& cache() {
  static Cache c;
  return c;
}

}  // namespace

Bf16WeightScope::Bf16WeightScope() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  ++c.open_scopes;
}

Bf16WeightScope::~Bf16WeightScope() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (--c.open_scopes == 0) {
    c.copies.clear();
    c.bytes = 0;
  }
}

const void* weights_kept(const float* W, int64_t n, WeightForm form, int64_t bytes,
                         const std::function<KeptCopy()>& make) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.open_scopes == 0) return nullptr;
  auto [it, added] = c.copies.try_emplace({W, n, form});
  if (added) {
    try {
      it->second = {make(), bytes};
    } catch (...) {  // out of memory, say: no half-made entry stays behind
      c.copies.erase(it);
      throw;
    }
    c.bytes += bytes;
  }
  return it->second.copy.get();
}

const uint16_t* bf16_weights(const float* W, int64_t n) {
  return static_cast<const uint16_t*>(weights_kept(W, n, WeightForm::Bf16, n * int64_t(sizeof(uint16_t)), [&] {
    MOE_LEAF_PHASE("quantize");
    std::shared_ptr<uint16_t> copy(new uint16_t[size_t(n)], std::default_delete<uint16_t[]>());
    to_bf16(copy.get(), W, n);
    return KeptCopy(copy);
  }));
}

void bf16_weights_forget(const float* begin, int64_t n) {
  if (!begin || n <= 0) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.copies.lower_bound({begin, 0, WeightForm::Bf16});
  while (it != c.copies.end() && std::get<0>(it->first) < begin + n) {
    c.bytes -= it->second.bytes;
    it = c.copies.erase(it);
  }
}

int64_t bf16_weights_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.bytes;
}

}  // namespace moe
