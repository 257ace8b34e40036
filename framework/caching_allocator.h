// A caching allocator over a raw allocator that is slow to call (cudaMalloc/cudaFree synchronise
// the device). Freed blocks are kept and handed out again for requests of about their size, so a
// training step that repeats the previous step's allocations makes no raw call at all.
//   - Sizes are rounded up: to 512 B below 1 MiB, to 2 MiB above (fewer distinct sizes to cache).
//   - A request takes the smallest cached block that fits unless that wastes more than a quarter
//     of a small request (max(1/8, 2 MiB) of a large one); otherwise it gets a new raw block.
//   - When the raw allocator fails, every cached block is released and the request retried once;
//     a second failure throws moe::Error with the sizes in use and cached.
//   - Blocks are not split and are reused as soon as they are freed: for device memory that is
//     right when all work runs on one stream (or the caller synchronised), which is the CUDA
//     backend's rule today (docs/cuda.md).
// The raw allocator is a parameter, so this logic is tested on the CPU (tests/unit); the CUDA
// backend's instance is framework/cuda/allocator.h. Thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace moe {

class CachingAllocator {
 public:
  struct Raw {
    std::function<void*(size_t)> alloc;  // nullptr on failure
    std::function<void(void*)> free;
    std::string name;  // for messages: "device 0"
  };
  struct Stats {
    size_t in_use = 0, cached = 0;          // bytes handed out / held for reuse (rounded sizes)
    size_t peak_in_use = 0, peak_reserved = 0;  // reserved = in_use + cached
    int64_t raw_allocs = 0, raw_frees = 0, hits = 0;
  };

  explicit CachingAllocator(Raw raw) : raw_(std::move(raw)) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // nullptr for 0 bytes; otherwise a block of at least `bytes`, or throws moe::Error.
  void* allocate(size_t bytes);
  // p must come from allocate() (nullptr is ignored).
  void free(void* p);
  // Returns every cached block to the raw allocator.
  void release_cached();
  Stats stats() const;

  static size_t round_size(size_t bytes);

 private:
  void release_cached_locked();

  Raw raw_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> cached_;         // size -> block
  std::unordered_map<void*, size_t> in_use_;    // block -> size
  Stats stats_;
};

}  // namespace moe
