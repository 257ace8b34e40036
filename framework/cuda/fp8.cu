// FP8 fake quantisation, FP8 GEMM operands and bf16 rounding on the GPU (kernels/fp8_tiles.h,
// kernels/fp8_operand.h, kernels/cast.h): the values and codes of framework/precision.cpp, bit for
// bit (the per-element math is the same functions; the tile amax is an integer max, the same in
// any order; x / s is IEEE division, nvcc's default without fast-math).
#include "framework/cuda/allocator.h"
#include "framework/cuda/fp8_gemm.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/fp8_operand.h"
#include "framework/kernels/fp8_tiles.h"

namespace moe::cuda {

namespace {

// Every tile's scale, row-major over the tiles (the CPU's scales array). Tiles of one row (1x128)
// or one column (128x1) take one thread per tile; square tiles first reduce each row's span (one
// thread per row and tile), then one thread per tile maxes its rows, so no thread walks 128 x 128
// values alone.
DeviceBuffer<float> tile_scales(const float* x, const kern::Fp8Tiles& g, cudaStream_t stream) {
  DeviceBuffer<float> scale_buf(g.count());
  float* scales = scale_buf.get();
  DeviceBuffer<uint32_t> part_buf;
  uint32_t* part = nullptr;
  if (g.tr > 1 && g.tc > 1) {
    part_buf = DeviceBuffer<uint32_t>(g.R * g.nbc);
    part = part_buf.get();
    launch_elements(g.R * g.nbc, [=] __device__(int64_t i) {
      part[i] = kern::fp8_span_amax_bits(x, g, i / g.nbc, i % g.nbc);
    }, stream);
  }
  launch_elements(g.count(), [=] __device__(int64_t t) {
    scales[t] = kern::e4m3_scale(kern::fp8_tile_amax_bits(x, part, g, t));
  }, stream);
  return scale_buf;  // part_buf is freed now: the allocator reuses it only for later work on the stream
}

}  // namespace

void fp8_quantize(float* xq, const float* x, int64_t R, int64_t C, int64_t tr, int64_t tc, cudaStream_t stream) {
  MOE_CHECK(tr >= 1 && tc >= 1, "tile ", tr, "x", tc);
  if (R == 0 || C == 0) return;
  const kern::Fp8Tiles g(R, C, tr, tc);
  const DeviceBuffer<float> scale_buf = tile_scales(x, g, stream);
  const float* scales = scale_buf.get();
  // All scales are written before any element is (stream order), so xq may alias x.
  launch_elements(R * C, [=] __device__(int64_t i) { kern::fp8_quantize_element(xq, x, scales, g, i); }, stream);
}

Fp8Operand fp8_operand(const float* x, int64_t R, int64_t C, bool transpose, bool blocks, cudaStream_t stream) {
  MOE_CHECK(R > 0 && C > 0, "fp8_operand of a ", R, "x", C, " matrix");
  const kern::Fp8Tiles g = kern::fp8_operand_tiles(R, C, transpose, blocks);
  Fp8Operand op;
  op.layout = kern::Fp8OperandLayout::make(transpose ? C : R, transpose ? R : C, blocks);
  MOE_CHECK(kern::fp8_operand_tiles_match(g, transpose, op.layout), "fp8_operand: tiles do not match the layout");
  op.codes = DeviceBuffer<uint8_t>(op.layout.code_count());
  op.scales = DeviceBuffer<float>(op.layout.scale_count());
  const DeviceBuffer<float> scale_buf = tile_scales(x, g, stream);
  const float* s = scale_buf.get();
  uint8_t* q = op.codes.get();
  float* sc = op.scales.get();
  const kern::Fp8OperandLayout L = op.layout;
  // One thread per code, writes coalesced; a transposed operand reads x with stride C (a tiled
  // transpose through shared memory would read it coalesced too: not done yet).
  launch_elements(L.code_count(), [=] __device__(int64_t i) {
    q[i] = kern::fp8_operand_code(x, s, g, transpose, L, i);
  }, stream);
  launch_elements(L.scale_count(), [=] __device__(int64_t j) {
    sc[j] = kern::fp8_operand_scale(s, g, transpose, L, j);
  }, stream);
  return op;
}

}  // namespace moe::cuda
