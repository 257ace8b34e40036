// SwiGLU on the GPU: kern::swiglu* (framework/kernels/activation.h), one thread per element.
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/activation.h"

namespace moe::cuda {

void swiglu_forward(float* h, const float* g, const float* u, int64_t n, cudaStream_t stream) {
  launch_elements(n, [=] __device__(int64_t i) { h[i] = kern::swiglu(g[i], u[i]); }, stream);
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n,
                     cudaStream_t stream) {
  launch_elements(n, [=] __device__(int64_t i) { kern::swiglu_backward(dg + i, du + i, dh[i], g[i], u[i]); }, stream);
}

}  // namespace moe::cuda
