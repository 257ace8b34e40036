// RoPE on the GPU: kern::rope_row_* (framework/kernels/rope.h), one block per (token, head) vector
// with the rotated copy in shared memory.
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/rope.h"

namespace moe::cuda {

void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads, int64_t row_stride,
                int64_t head_stride, int dim, bool backward, cudaStream_t stream) {
  const int half = dim / 2;
  launch_rows(B * T * heads, row_threads(2 * half), size_t(dim) * sizeof(float),
              [=] __device__(BlockRow & r, int64_t row) {
                const int64_t bt = row / heads, h = row % heads, t = bt % T;
                float* v = x + bt * row_stride + h * head_stride;
                if (backward)
                  kern::rope_row_backward(r, v, cos + t * half, sin + t * half, dim, r.shared());
                else
                  kern::rope_row_forward(r, v, cos + t * half, sin + t * half, dim, r.shared());
              }, stream);
}

}  // namespace moe::cuda
