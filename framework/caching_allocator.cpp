#include "framework/caching_allocator.h"

#include <algorithm>

#include "framework/error.h"

namespace moe {

namespace {
constexpr size_t kSmallAlign = 512, kLargeAlign = size_t(2) << 20, kLarge = size_t(1) << 20;

std::string mib(size_t bytes) { return detail::concat(double(bytes) / double(1 << 20), " MiB"); }
}  // namespace

size_t CachingAllocator::round_size(size_t bytes) {
  const size_t a = bytes < kLarge ? kSmallAlign : kLargeAlign;
  return (bytes + a - 1) / a * a;
}

CachingAllocator::~CachingAllocator() {
  // Blocks still in use belong to their owners' lifetimes (process exit); only the cache goes back.
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void* CachingAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  // Reuse a cached block unless it wastes more than a quarter of a small request, or more than
  // max(1/8, 2 MiB) of a large one.
  const size_t slack = size < kLarge ? size / 4 : std::max(size / 8, kLargeAlign);
  auto it = cached_.lower_bound(size);
  if (it != cached_.end() && it->first <= size + slack) {
    void* p = it->second;
    const size_t got = it->first;
    cached_.erase(it);
    in_use_.emplace(p, got);
    stats_.cached -= got;
    stats_.in_use += got;
    stats_.hits++;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return p;
  }
  void* p = raw_.alloc(size);
  if (!p && !cached_.empty()) {
    release_cached_locked();
    p = raw_.alloc(size);
  }
  if (!p)
    throw error(raw_.name, ": out of memory allocating ", mib(size), " (", mib(stats_.in_use),
                " in use by this process; expected a smaller model, micro_batch or seq_len)");
  stats_.raw_allocs++;
  in_use_.emplace(p, size);
  stats_.in_use += size;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.in_use + stats_.cached);
  return p;
}

void CachingAllocator::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_use_.find(p);
  MOE_CHECK(it != in_use_.end(), raw_.name, ": free of a block this allocator does not hold");
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use -= size;
  stats_.cached += size;
  cached_.emplace(size, p);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  for (auto& [size, p] : cached_) {
    raw_.free(p);
    stats_.raw_frees++;
  }
  cached_.clear();
  stats_.cached = 0;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace moe
