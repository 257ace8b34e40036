// The caching allocator (framework/caching_allocator.h) over a fake raw allocator with a capacity,
// standing in for cudaMalloc: reuse, rounding, the retry after releasing the cache, the
// out-of-memory error, and the stats the benchmarks report.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "framework/caching_allocator.h"
#include "framework/error.h"

using namespace moe;

namespace {

struct FakeDevice {
  explicit FakeDevice(size_t cap) : capacity(cap) {}
  size_t capacity, used = 0;
  int allocs = 0, frees = 0;
  std::set<void*> live;
  std::map<void*, size_t> sizes;
  CachingAllocator::Raw raw() {
    CachingAllocator::Raw r;
    r.alloc = [this](size_t bytes) -> void* {
      if (used + bytes > capacity) return nullptr;
      void* p = std::malloc(bytes);
      used += bytes;
      allocs++;
      live.insert(p);
      sizes[p] = bytes;
      return p;
    };
    r.free = [this](void* p) {
      EXPECT_TRUE(live.erase(p)) << "double or foreign free";
      used -= sizes[p];
      frees++;
      std::free(p);
    };
    r.name = "fake device";
    return r;
  }
};

constexpr size_t MiB = size_t(1) << 20;

}  // namespace

TEST(CachingAllocator, RoundsSizes) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(MiB - 1), MiB);
  EXPECT_EQ(CachingAllocator::round_size(MiB + 1), 2 * MiB);
  EXPECT_EQ(CachingAllocator::round_size(5 * MiB), 6 * MiB);
}

TEST(CachingAllocator, ReusesFreedBlocksWithoutRawCalls) {
  FakeDevice dev(64 * MiB);
  {
    CachingAllocator a(dev.raw());
    EXPECT_EQ(a.allocate(0), nullptr);
    a.free(nullptr);
    // A "training step": the same allocations every time.
    for (int step = 0; step < 5; ++step) {
      void* x = a.allocate(3 * MiB);
      void* y = a.allocate(1000);
      void* z = a.allocate(3 * MiB);
      EXPECT_NE(x, z);
      a.free(y);
      a.free(x);
      a.free(z);
    }
    EXPECT_EQ(dev.allocs, 3);  // only the first step reached the raw allocator
    CachingAllocator::Stats s = a.stats();
    EXPECT_EQ(s.raw_allocs, 3);
    EXPECT_EQ(s.hits, 12);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(s.cached, 8 * MiB + 1024);
    EXPECT_EQ(s.peak_in_use, 8 * MiB + 1024);
    // A small request takes the cached small block, but never a big one.
    void* s1 = a.allocate(600);
    void* s2 = a.allocate(700);
    EXPECT_EQ(dev.allocs, 4);
    a.free(s1);
    a.free(s2);
    a.release_cached();
    EXPECT_EQ(dev.used, 0u);
    EXPECT_EQ(a.stats().cached, 0u);
  }
  EXPECT_TRUE(dev.live.empty());
}

TEST(CachingAllocator, ReleasesTheCacheAndRetriesWhenFull) {
  FakeDevice dev(10 * MiB);
  CachingAllocator a(dev.raw());
  void* x = a.allocate(6 * MiB);
  a.free(x);  // cached, but the device is still "full"
  void* y = a.allocate(8 * MiB);  // fails raw, releases the cached 6 MiB, succeeds
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(dev.frees, 1);
  try {
    a.allocate(4 * MiB);
    FAIL() << "expected out of memory";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("fake device: out of memory allocating 4 MiB (8 MiB in use"), std::string::npos) << msg;
  }
  a.free(y);
}

TEST(CachingAllocator, RejectsForeignPointersAndIsThreadSafe) {
  FakeDevice dev(256 * MiB);
  CachingAllocator a(dev.raw());
  int local = 0;
  EXPECT_THROW(a.free(&local), InternalError);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&a, t] {
      for (int i = 0; i < 200; ++i) {
        void* p = a.allocate(size_t(512 * (1 + (i + t) % 7)));
        a.free(p);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(a.stats().in_use, 0u);
  EXPECT_LE(a.stats().raw_allocs, 4 * 7);
}
