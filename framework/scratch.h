// Scratch memory for temporaries inside a training step, from a per-thread LIFO arena: the first
// step grows it to the high-water mark, later steps allocate nothing. A ScratchScope releases
// everything taken since it opened; tensors from scratch() must not outlive their scope.
//   ScratchScope scope;
//   Tensor dq = scratch({N, H, d});   // uninitialised f32, 64-byte aligned
#pragma once
#include <cstddef>
#include <cstdint>

#include "framework/kernels/fp8_rows.h"
#include "framework/tensor.h"

namespace moe {

class ScratchScope {
 public:
  ScratchScope();
  ~ScratchScope();
  ScratchScope(const ScratchScope&) = delete;
  ScratchScope& operator=(const ScratchScope&) = delete;

 private:
  size_t chunk_, used_;
};

// An uninitialised f32 tensor from the calling thread's arena (needs an open ScratchScope); on the
// device of the compute backend (framework/backend.h), so model code gets device scratch on a GPU.
Tensor scratch(const Shape& shape);
// The same for any element type.
Tensor scratch(const Shape& shape, DType dtype);

// E4M3 rows (kernels/fp8_rows.h) of a rows x cols activation, their codes and scales in scratch;
// default-constructed: none, for callers whose rows are optional (ptr() is then null).
class ScratchFp8Rows {
 public:
  ScratchFp8Rows() = default;
  ScratchFp8Rows(int64_t rows, int64_t cols);
  const kern::Fp8Rows& get() const { return rows_; }
  const kern::Fp8Rows* ptr() const { return present_ ? &rows_ : nullptr; }

 private:
  Tensor codes_, scales_;
  kern::Fp8Rows rows_;
  bool present_ = false;
};

// Raw floats from the same arena, for per-thread buffers inside parallel_for bodies.
float* scratch_floats(int64_t n);
// Bytes the calling thread's arena holds (for tests and memory reports).
size_t scratch_capacity();

}  // namespace moe
