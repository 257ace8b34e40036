// FP8 fake quantisation and bf16 rounding on the GPU (kernels/fp8_tiles.h, kernels/cast.h): the
// values of framework/precision.cpp, bit for bit (the per-element math is the same functions; the
// tile amax is an integer max, the same in any order; x / s is IEEE division, nvcc's default
// without fast-math).
#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/fp8_tiles.h"

namespace moe::cuda {

void fp8_quantize(float* xq, const float* x, int64_t R, int64_t C, int64_t tr, int64_t tc, cudaStream_t stream) {
  MOE_CHECK(tr >= 1 && tc >= 1, "tile ", tr, "x", tc);
  if (R == 0 || C == 0) return;
  const kern::Fp8Tiles g(R, C, tr, tc);
  DeviceBuffer<float> scale_buf(g.count());
  float* scales = scale_buf.get();
  // Tiles of one row (1x128) or one column (128x1) take one thread per tile; square tiles first
  // reduce each row's span (one thread per row and tile), then one thread per tile maxes its rows,
  // so no thread walks 128 x 128 values alone.
  DeviceBuffer<uint32_t> part_buf;
  uint32_t* part = nullptr;
  if (tr > 1 && tc > 1) {
    part_buf = DeviceBuffer<uint32_t>(R * g.nbc);
    part = part_buf.get();
    launch_elements(R * g.nbc, [=] __device__(int64_t i) {
      part[i] = kern::fp8_span_amax_bits(x, g, i / g.nbc, i % g.nbc);
    }, stream);
  }
  launch_elements(g.count(), [=] __device__(int64_t t) {
    scales[t] = kern::e4m3_scale(kern::fp8_tile_amax_bits(x, part, g, t));
  }, stream);
  // All scales are written before any element is (stream order), so xq may alias x.
  launch_elements(R * C, [=] __device__(int64_t i) { kern::fp8_quantize_element(xq, x, scales, g, i); }, stream);
}

void round_bf16(float* y, const float* x, int64_t n, cudaStream_t stream) {
  launch_elements(n, [=] __device__(int64_t i) { y[i] = kern::round_bf16(x[i]); }, stream);
}

}  // namespace moe::cuda
