#include "framework/precision.h"

#include <algorithm>

#include "framework/bf16_gemm.h"
#include "framework/bf16_weights.h"
#include "framework/dtype.h"
#include "framework/error.h"
#include "framework/gemm.h"
#include "framework/kernels/fp8.h"
#include "framework/ops.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16") return Precision::BF16;
  if (name == "fp8") return Precision::FP8;
  MOE_CHECK(false, "unknown precision '", name, "' (the config accepts fp32 | bf16 | fp8)");
  return Precision::FP32;
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::BF16: return "bf16";
    case Precision::FP8: return "fp8";
  }
  return "?";
}

void fp8_quantize(float* xq, uint8_t* codes, float* scales, const float* x, int64_t R, int64_t C, int64_t tr,
                  int64_t tc) {
  MOE_CHECK(tr >= 1 && tc >= 1, "tile ", tr, "x", tc);
  if (R == 0 || C == 0) return;
  const int64_t nbr = (R + tr - 1) / tr, nbc = (C + tc - 1) / tc;
  // One task per band of tr rows: its amaxes, then its scales, then its values. Column tiles
  // (tc == 1) take their amax row by row across the band, so every loop runs along contiguous memory.
  parallel_for(nbr, [&](int64_t b0, int64_t b1) {
    ScratchScope scope;
    // The arena's memory is only ever used as uint32 here.
    uint32_t* amax = reinterpret_cast<uint32_t*>(scratch_floats(nbc));
    float* s = scratch_floats(nbc);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * tr, rows = std::min(tr, R - r0);
      std::fill(amax, amax + nbc, 0u);
      for (int64_t r = r0; r < r0 + rows; ++r) {
        const float* row = x + r * C;
        if (tc == 1)
          kern::amax_bits_columns(amax, row, C);
        else
          for (int64_t t = 0; t < nbc; ++t) amax[t] = kern::amax_bits(row + t * tc, std::min(tc, C - t * tc), amax[t]);
      }
      for (int64_t t = 0; t < nbc; ++t) s[t] = kern::e4m3_scale(amax[t]);
      if (scales) std::copy(s, s + nbc, scales + b * nbc);
      for (int64_t r = r0; r < r0 + rows; ++r) {
        const float* row = x + r * C;
        // Codes first: xq may alias x.
        if (tc == 1) {
          if (codes) kern::encode_span_e4m3(codes + r * C, row, C, s);
          if (xq) kern::quantize_span_e4m3(xq + r * C, row, C, s);
        } else {
          for (int64_t t = 0; t < nbc; ++t) {
            const int64_t c0 = t * tc, n = std::min(tc, C - c0);
            if (codes) kern::encode_span_e4m3(codes + r * C + c0, row + c0, n, s[t]);
            if (xq) kern::quantize_span_e4m3(xq + r * C + c0, row + c0, n, s[t]);
          }
        }
      }
    }
  }, std::max<int64_t>(1, (int64_t(1) << 14) / (tr * C)));
}

void fp8_quantize_1x128(float* xq, const float* x, int64_t R, int64_t C) {
  fp8_quantize(xq, nullptr, nullptr, x, R, C, 1, kern::kFp8Tile);
}
void fp8_quantize_128x1(float* xq, const float* x, int64_t R, int64_t C) {
  fp8_quantize(xq, nullptr, nullptr, x, R, C, kern::kFp8Tile, 1);
}
void fp8_quantize_128x128(float* xq, const float* x, int64_t R, int64_t C) {
  fp8_quantize(xq, nullptr, nullptr, x, R, C, kern::kFp8Tile, kern::kFp8Tile);
}

const float* fp8_weights(const float* W, int64_t out, int64_t in) {
  const int64_t n = out * in;
  auto quantise = [&](float* Wq) {
    MOE_LEAF_PHASE("quantize");
    fp8_quantize_128x128(Wq, W, out, in);
  };
  const void* kept = weights_kept(W, n, WeightForm::Fp8Blocks, n * int64_t(sizeof(float)), [&] {
    std::shared_ptr<float> copy(new float[size_t(n)], std::default_delete<float[]>());
    quantise(copy.get());
    return KeptCopy(copy);
  });
  if (kept) return static_cast<const float*>(kept);
  float* Wq = scratch_floats(n);
  quantise(Wq);
  return Wq;
}

void round_bf16(float* y, const float* x, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = round_bf16(x[i]);
  }, 1 << 14);
}

namespace {

// bf16 bit patterns for n values in the calling thread's scratch arena.
uint16_t* scratch_bf16(int64_t n) { return reinterpret_cast<uint16_t*>(scratch_floats((n + 1) / 2)); }

// W as bf16: the copy made once inside a Bf16WeightScope (bf16_weights.h), else rounded into the
// caller's scratch.
const uint16_t* weights_bf16(const float* W, int64_t n) {
  if (const uint16_t* kept = bf16_weights(W, n)) return kept;
  uint16_t* Wb = scratch_bf16(n);
  MOE_LEAF_PHASE("quantize");
  to_bf16(Wb, W, n);
  return Wb;
}

// bf16 on the CPU's bf16 instructions: the operands rounded once into bf16 storage (half the bytes
// of the emulation's rounded f32 copies), the GEMMs accumulate in f32 (bf16_gemm.h). x arrives as
// bf16 already (rounded by the caller, or once by its producer: linear_forward_bf16 below).
void native_forward_bf16(float* y, const uint16_t* xb, const float* W, int64_t M, int64_t in, int64_t out,
                         bool accumulate) {
  ScratchScope scope;
  const uint16_t* Wb = weights_bf16(W, out * in);
  gemm_bf16(false, true, M, out, in, 1.f, xb, in, Wb, in, accumulate ? 1.f : 0.f, y, out);
}

void native_backward_bf16(float* dx, float* dW, const float* dy, const uint16_t* xb, const float* W, int64_t M,
                          int64_t in, int64_t out, bool accumulate_dx) {
  ScratchScope scope;
  uint16_t* dyb = scratch_bf16(M * out);
  const uint16_t* Wb = dx ? weights_bf16(W, out * in) : nullptr;
  {
    MOE_LEAF_PHASE("quantize");
    to_bf16(dyb, dy, M * out);
  }
  if (dx) gemm_bf16(false, false, M, in, out, 1.f, dyb, out, Wb, in, accumulate_dx ? 1.f : 0.f, dx, in);
  if (dW) gemm_bf16(true, false, out, in, M, 1.f, dyb, out, xb, in, 1.f, dW, in);
}

// x[M, in] rounded to bf16 in the caller's scratch.
const uint16_t* rounded_input(const float* x, int64_t n) {
  uint16_t* xb = scratch_bf16(n);
  MOE_LEAF_PHASE("quantize");
  to_bf16(xb, x, n);
  return xb;
}

// bf16 bits widened to f32 (exact) in the caller's scratch: the emulated path's input, which its
// rounding then leaves as it is.
const float* widened(const uint16_t* xb, int64_t n) {
  float* x = scratch_floats(n);
  cast_bf16_to_f32(x, xb, n);
  return x;
}

}  // namespace

void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                    Precision p) {
  if (p == Precision::FP32) return linear_forward(y, x, W, M, in, out, accumulate);
  if (p == Precision::BF16 && bf16_gemm_native()) {
    ScratchScope scope;
    return native_forward_bf16(y, rounded_input(x, M * in), W, M, in, out, accumulate);
  }
  ScratchScope scope;
  float* xq = scratch_floats(M * in);
  const float* Wq = nullptr;
  if (p == Precision::BF16) {
    MOE_LEAF_PHASE("quantize");
    float* Wb = scratch_floats(out * in);
    round_bf16(xq, x, M * in);
    round_bf16(Wb, W, out * in);
    Wq = Wb;
  } else {
    Wq = fp8_weights(W, out, in);
    MOE_LEAF_PHASE("quantize");
    fp8_quantize_1x128(xq, x, M, in);
  }
  linear_forward(y, xq, Wq, M, in, out, accumulate);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                     int64_t out, bool accumulate_dx, Precision p) {
  if (p == Precision::FP32) return linear_backward(dx, dW, dy, x, W, M, in, out, accumulate_dx);
  if (p == Precision::BF16 && bf16_gemm_native()) {
    ScratchScope scope;
    return native_backward_bf16(dx, dW, dy, dW ? rounded_input(x, M * in) : nullptr, W, M, in, out, accumulate_dx);
  }
  ScratchScope scope;
  float* dyq = scratch_floats(M * out);
  if (p == Precision::BF16) {
    // One rounding of each operand serves both GEMMs.
    float* xq = dW ? scratch_floats(M * in) : nullptr;
    float* Wq = dx ? scratch_floats(out * in) : nullptr;
    {
      MOE_LEAF_PHASE("quantize");
      round_bf16(dyq, dy, M * out);
      if (xq) round_bf16(xq, x, M * in);
      if (Wq) round_bf16(Wq, W, out * in);
    }
    linear_backward(dx, dW, dyq, xq, Wq, M, in, out, accumulate_dx);
    return;
  }
  // fp8: dgrad and wgrad reduce over different axes, so dy is quantised once for each.
  if (dx) {
    const float* Wq = fp8_weights(W, out, in);
    {
      MOE_LEAF_PHASE("quantize");
      fp8_quantize_1x128(dyq, dy, M, out);
    }
    linear_backward(dx, nullptr, dyq, nullptr, Wq, M, in, out, accumulate_dx);
  }
  if (dW) {
    float* xq = scratch_floats(M * in);
    {
      MOE_LEAF_PHASE("quantize");
      fp8_quantize_128x1(dyq, dy, M, out);
      fp8_quantize_128x1(xq, x, M, in);
    }
    linear_backward(nullptr, dW, dyq, xq, nullptr, M, in, out, false);
  }
}

void linear_forward_bf16(float* y, const uint16_t* x, const float* W, int64_t M, int64_t in, int64_t out,
                         bool accumulate) {
  if (bf16_gemm_native()) return native_forward_bf16(y, x, W, M, in, out, accumulate);
  ScratchScope scope;
  linear_forward(y, widened(x, M * in), W, M, in, out, accumulate, Precision::BF16);
}

void linear_backward_bf16(float* dx, float* dW, const float* dy, const uint16_t* x, const float* W, int64_t M,
                          int64_t in, int64_t out, bool accumulate_dx) {
  if (bf16_gemm_native()) return native_backward_bf16(dx, dW, dy, dW ? x : nullptr, W, M, in, out, accumulate_dx);
  ScratchScope scope;
  linear_backward(dx, dW, dy, dW ? widened(x, M * in) : nullptr, W, M, in, out, accumulate_dx, Precision::BF16);
}

}  // namespace moe
