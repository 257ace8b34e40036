// RMSNorm on the GPU: kern::rmsnorm_row_* (framework/kernels/norm.h), one block per row.
#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/norm.h"

namespace moe::cuda {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                     cudaStream_t stream) {
  launch_rows(N, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::rmsnorm_row_forward(r, y + n * D, rstd + n, x + n * D, w, D, eps);
  }, stream);
}

// Runs of rows whose dw partials are summed in order: a fixed number, so the result does not
// depend on the device.
constexpr int64_t kNormSegments = 128;

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, bool accumulate_dx, cudaStream_t stream) {
  if (N == 0) return;
  const int64_t S = N < kNormSegments ? N : kNormSegments;
  DeviceBuffer<float> partial(S * D);
  partial.zero(stream);
  float* part = partial.get();
  launch_segments(N, S, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t s, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      kern::rmsnorm_row_backward(r, dx + n * D, part + s * D, dy + n * D, x + n * D, w, rstd[n], D, accumulate_dx);
  }, stream);
  launch_elements(D, [=] __device__(int64_t i) { kern::sum_partials(dw, part, S, D, i); }, stream);
}

}  // namespace moe::cuda
