// Softmax, cross-entropy and target ranks on the GPU: kern::softmax_row_*, kern::cross_entropy_row_*,
// kern::target_rank_row (framework/kernels/softmax.h), one block per row.
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/softmax.h"

namespace moe::cuda {

void softmax_forward(float* y, float* lse, const float* x, int64_t N, int64_t V, bool causal, int64_t q0,
                     cudaStream_t stream) {
  launch_rows(N, row_threads(V), 0, [=] __device__(BlockRow & r, int64_t n) {
    const float l = kern::softmax_row_forward(r, y + n * V, x + n * V, kern::softmax_valid(n, V, causal, q0), V, false);
    if (r.leader()) lse[n] = l;
  }, stream);
}

void softmax_backward(float* dx, const float* y, const float* dy, int64_t N, int64_t V, bool causal, int64_t q0,
                      cudaStream_t stream) {
  launch_rows(N, row_threads(V), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::softmax_row_backward(r, dx + n * V, y + n * V, dy + n * V, kern::softmax_valid(n, V, causal, q0), V);
  }, stream);
}

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           cudaStream_t stream) {
  launch_rows(N, row_threads(V), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::cross_entropy_row_forward(r, losses + n, lse + n, logits + n * V, targets[n], V);
  }, stream);
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float scale,
                            int64_t N, int64_t V, cudaStream_t stream) {
  launch_rows(N, row_threads(V), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::cross_entropy_row_backward(r, dlogits + n * V, logits + n * V, lse[n], targets[n], scale, V);
  }, stream);
}

void target_ranks(int32_t* ranks, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                  cudaStream_t stream) {
  launch_rows(N, row_threads(V), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::target_rank_row(r, ranks + n, logits + n * V, targets[n], V);
  }, stream);
}

}  // namespace moe::cuda
