// MoE dispatch on the GPU: kern::dispatch_*_segment, kern::*permute_row* (framework/kernels/permute.h).
// The plan runs one block per expert (a block-wide scan keeps each expert's pairs in token order);
// the gathers and the combine one block per row.
#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/permute.h"

namespace moe::cuda {

constexpr int kPlanThreads = 256;

void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P, int64_t E,
                       cudaStream_t stream) {
  DeviceBuffer<int64_t> count_buf(E);
  int64_t* counts = count_buf.get();
  launch_rows(E, kPlanThreads, 0, [=] __device__(BlockRow & r, int64_t e) {
    kern::dispatch_count_segment(r, counts, idx, P, int32_t(e));
  }, stream);
  launch_rows(E, kPlanThreads, 0, [=] __device__(BlockRow & r, int64_t e) {
    kern::dispatch_fill_segment(r, offsets, slot_of, pos_of, counts, idx, P, int32_t(e), int32_t(E));
  }, stream);
}

void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D,
                 cudaStream_t stream) {
  launch_rows(P, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t p) {
    kern::copy_row(r, xs + p * D, x + (slot_of[p] / K) * D, D);
  }, stream);
}

void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K, int64_t D,
                          cudaStream_t stream) {
  launch_rows(N, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::permute_row_backward(r, dx + n * D, dxs, pos_of + n * K, K, D);
  }, stream);
}

namespace {

// The combine and its backward over outputs of element type Y (f32, or bf16 bits).
template <class Y>
void unpermute_rows(float* y, const Y* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                    bool accumulate, cudaStream_t stream) {
  launch_rows(N, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::unpermute_row(r, y + n * D, ys, pos_of + n * K, w + n * K, K, D, accumulate);
  }, stream);
}

template <class Y>
void unpermute_rows_backward(float* dw, float* dys, const float* dy, const Y* ys, const int32_t* pos_of,
                             const float* w, int64_t N, int64_t K, int64_t D, cudaStream_t stream) {
  launch_rows(N, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::unpermute_row_backward(r, dw + n * K, dys, dy + n * D, ys, pos_of + n * K, w + n * K, K, D);
  }, stream);
}

}  // namespace

void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                   bool accumulate, cudaStream_t stream) {
  unpermute_rows(y, ys, pos_of, w, N, K, D, accumulate, stream);
}

void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                            const float* w, int64_t N, int64_t K, int64_t D, cudaStream_t stream) {
  unpermute_rows_backward(dw, dys, dy, ys, pos_of, w, N, K, D, stream);
}

void moe_unpermute_bf16(float* y, const uint16_t* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K,
                        int64_t D, bool accumulate, cudaStream_t stream) {
  unpermute_rows(y, ys, pos_of, w, N, K, D, accumulate, stream);
}

void moe_unpermute_backward_bf16(float* dw, float* dys, const float* dy, const uint16_t* ys, const int32_t* pos_of,
                                 const float* w, int64_t N, int64_t K, int64_t D, cudaStream_t stream) {
  unpermute_rows_backward(dw, dys, dy, ys, pos_of, w, N, K, D, stream);
}

}  // namespace moe::cuda
