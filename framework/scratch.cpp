#include "framework/scratch.h"

#include "framework/backend.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <vector>

namespace moe {
namespace {

struct Chunk {
  char* data;
  size_t capacity, used;
};

struct Arena {
  std::vector<Chunk> chunks;
  size_t current = 0;  // chunk being bumped
  int depth = 0;       // open scopes

  ~Arena() {
    for (Chunk& c : chunks) std::free(c.data);
  }

  void* take(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    while (current < chunks.size() && chunks[current].used + bytes > chunks[current].capacity) ++current;
    if (current == chunks.size()) {
      size_t cap = std::max<size_t>(bytes, chunks.empty() ? size_t(1) << 20 : 2 * chunks.back().capacity);
      void* p = std::aligned_alloc(64, cap);
      if (!p) throw std::bad_alloc();
      chunks.push_back({static_cast<char*>(p), cap, 0});
    }
    Chunk& c = chunks[current];
    void* p = c.data + c.used;
    c.used += bytes;
    return p;
  }

  // When the outermost scope closes after the arena had to grow into several chunks, replace them
  // by one chunk of the total size, so the next step bumps through a single block.
  void coalesce() {
    if (chunks.size() <= 1) return;
    size_t total = 0;
    for (Chunk& c : chunks) {
      total += c.capacity;
      std::free(c.data);
    }
    void* p = std::aligned_alloc(64, total);
    if (!p) throw std::bad_alloc();
    chunks.assign(1, Chunk{static_cast<char*>(p), total, 0});
  }
};

Arena& arena() {
  thread_local Arena a;
  return a;
}

}  // namespace

ScratchScope::ScratchScope() {
  Arena& a = arena();
  chunk_ = a.current;
  used_ = a.chunks.empty() ? 0 : a.chunks[a.current].used;
  ++a.depth;
}

ScratchScope::~ScratchScope() {
  Arena& a = arena();
  // Everything after the mark is released: later chunks become empty, the marked one rewinds.
  for (size_t i = chunk_ + 1; i < a.chunks.size(); ++i) a.chunks[i].used = 0;
  if (!a.chunks.empty()) a.chunks[chunk_].used = used_;
  a.current = chunk_;
  if (--a.depth == 0) a.coalesce();
}

Tensor scratch(const Shape& shape) { return scratch(shape, DType::F32); }

Tensor scratch(const Shape& shape, DType dtype) {
  MOE_CHECK(arena().depth > 0, "scratch() needs an open ScratchScope");
  // On a device the backend's (caching) allocator plays the arena's part.
  if (compute().device() != Device::CPU) return Tensor::empty(shape, dtype, compute().device());
  return Tensor::borrow(arena().take(size_t(shape_numel(shape) * dtype_size(dtype))), shape, dtype);
}

ScratchFp8Rows::ScratchFp8Rows(int64_t rows, int64_t cols)
    : codes_(scratch({rows, kern::Fp8Rows::ld_of(cols)}, DType::F8E4M3)),
      scales_(scratch({rows, kern::Fp8Rows::tiles_of(cols)}, DType::F32)),
      rows_{codes_.data<uint8_t>(), scales_.f32(), rows, cols},
      present_(true) {}

float* scratch_floats(int64_t n) {
  MOE_CHECK(arena().depth > 0, "scratch_floats() needs an open ScratchScope");
  return static_cast<float*>(arena().take(size_t(n) * sizeof(float)));
}

size_t scratch_capacity() {
  size_t total = 0;
  for (const Chunk& c : arena().chunks) total += c.capacity;
  return total;
}

}  // namespace moe
