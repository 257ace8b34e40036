// Router on the GPU: kern::router_row_* (framework/kernels/router.h), one thread per token with its
// scratch in device memory (a token's E scores are few; the serial top-k is the CPU's exactly).
#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/router.h"

namespace moe::cuda {

void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                    const kern::RouterSpec& sp, cudaStream_t stream) {
  const int64_t nf = kern::router_scratch_floats(sp), ni = kern::router_scratch_ints(sp), E = sp.E, K = sp.K;
  DeviceBuffer<float> fscratch(N * nf);
  DeviceBuffer<int32_t> iscratch(N * ni);
  float* fs = fscratch.get();
  int32_t* is = iscratch.get();
  const kern::RouterSpec spec = sp;
  launch_elements(N, [=] __device__(int64_t n) {
    kern::router_row_forward(scores + n * E, idx + n * K, w + n * K, logits + n * E, bias, spec, fs + n * nf,
                             is + n * ni);
  }, stream);
}

void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                     const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N, const kern::RouterSpec& sp,
                     cudaStream_t stream) {
  const int64_t E = sp.E, K = sp.K;
  DeviceBuffer<float> ds(N * E);
  float* dsp = ds.get();
  const kern::RouterSpec spec = sp;
  launch_elements(N, [=] __device__(int64_t n) {
    kern::RouterLossGrad g = lg;
    g.f = f_BE ? f_BE + (n / T) * E : nullptr;
    kern::router_row_backward(dlogits + n * E, dsp + n * E, scores + n * E, logits + n * E, idx + n * K, dw + n * K, g,
                              spec);
  }, stream);
}

void router_bias_update(float* bias, const float* load, int64_t E, float rate, cudaStream_t stream) {
  launch_elements(E, [=] __device__(int64_t e) {
    kern::router_bias_update(bias + e, load[e], kern::router_mean_load(load, E), rate);
  }, stream);
}

void router_loss_stats(float* losses, float* f_BE, const float* scores, const float* logits, const int32_t* idx,
                       int64_t B, int64_t T, float aux_coef, float z_coef, const kern::RouterSpec& sp,
                       cudaStream_t stream) {
  const int64_t N = B * T, E = sp.E, K = sp.K, BE = aux_coef > 0 ? B * E : 0, NZ = z_coef > 0 ? N : 0;
  DeviceBuffer<float> tot(BE > 0 && N > 0 ? N : 1), z(NZ > 0 ? NZ : 1);
  DeviceBuffer<double> fP(BE > 0 ? BE : 1);
  float *tp = BE > 0 ? tot.get() : nullptr, *zp = NZ > 0 ? z.get() : nullptr;
  double* fPp = fP.get();
  const kern::RouterSpec spec = sp;
  launch_rows(N, row_threads(E), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::router_token_stats(r, tp ? tp + n : nullptr, zp ? zp + n : nullptr, scores + n * E, logits + n * E, E);
  }, stream);
  launch_rows(BE, row_threads(T), 0, [=] __device__(BlockRow & r, int64_t row) {
    const int64_t b = row / E, e = row % E, t0 = b * T;
    kern::router_balance_row(r, f_BE + row, fPp + row, scores + t0 * E, idx + t0 * K, tp + t0, T, e, spec);
  }, stream);
  launch_rows(1, 256, 0, [=] __device__(BlockRow & r, int64_t) {
    kern::router_loss_totals(r, losses, fPp, BE, B, zp, NZ, aux_coef, z_coef);
  }, stream);
}

}  // namespace moe::cuda
