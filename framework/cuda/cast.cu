// f32 <-> bf16 on the GPU: kern::f32_to_bf16_bits / bf16_bits_to_f32 (framework/kernels/cast.h).
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/cast.h"

namespace moe::cuda {

void cast_f32_to_bf16(uint16_t* out, const float* in, int64_t n, cudaStream_t stream) {
  launch_elements(n, [=] __device__(int64_t i) { out[i] = kern::f32_to_bf16_bits(in[i]); }, stream);
}

void cast_bf16_to_f32(float* out, const uint16_t* in, int64_t n, cudaStream_t stream) {
  launch_elements(n, [=] __device__(int64_t i) { out[i] = kern::bf16_bits_to_f32(in[i]); }, stream);
}

}  // namespace moe::cuda
