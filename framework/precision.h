// Compute precision of the linear layers' GEMMs (train.precision), emulated exactly on the CPU:
//   fp32  the GEMM inputs as they are.
//   bf16  both GEMM inputs rounded to bf16 (nearest-even), products accumulated in f32: on the
//         CPU's AVX512-BF16 instructions where it has them (bf16_gemm.h), else f32 GEMMs on the
//         rounded values.
//   fp8   DeepSeek-V3's recipe: both inputs quantised to E4M3 with f32 scales per tile of the
//         reduction axis (framework/kernels/fp8.h), the GEMM run on the de-quantised values with f32
//         accumulation. Tiles, for a linear layer y[M,out] = x[M,in] W[out,in]^T:
//           forward  y  = x  W^T   x  1x128 tiles along in,      W 128x128 blocks
//           dgrad    dx = dy W     dy 1x128 tiles along out,     W 128x128 blocks (the same ones)
//           wgrad    dW = dy^T x   dy and x 128x1 tiles along the tokens M (the reduction axis)
// Everything else (outputs, master weights, gradients, optimizer state) stays f32: the emulation
// models where the recipe loses precision, the GEMM inputs. Quantisation reads the f32 inputs each
// time; a GPU run would quantise the weights once per step and keep x's codes for wgrad.
// Letters: M rows (tokens), R x C a matrix cut into tiles of tr x tc.
#pragma once
#include <cstdint>
#include <string>

namespace moe {

enum class Precision : uint8_t { FP32, BF16, FP8 };

// "fp32" | "bf16" | "fp8" (the config has validated the name; anything else is a broken invariant).
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);

// Fake-quantises x[R,C] (row-major) to E4M3 in tiles of tr x tc (partial tiles at the edges get their
// own scale): xq = e4m3(x / s) * s with s = amax(tile) / 448 (see kern::e4m3_scale for zero and
// non-finite tiles). Any of xq, codes ([R,C]) and scales ([ceil(R/tr), ceil(C/tc)], row-major) may be
// null; xq may alias x.
void fp8_quantize(float* xq, uint8_t* codes, float* scales, const float* x, int64_t R, int64_t C, int64_t tr,
                  int64_t tc);
// The three tilings of DeepSeek-V3 (tile edge 128).
void fp8_quantize_1x128(float* xq, const float* x, int64_t R, int64_t C);    // activations, along rows
void fp8_quantize_128x1(float* xq, const float* x, int64_t R, int64_t C);    // along columns (wgrad)
void fp8_quantize_128x128(float* xq, const float* x, int64_t R, int64_t C);  // weights
// W[out,in] fake-quantised in 128x128 blocks: the copy kept inside a Bf16WeightScope
// (bf16_weights.h, WeightForm::Fp8Blocks: quantised once per step, not per GEMM), else quantised
// into the caller's scratch scope.
const float* fp8_weights(const float* W, int64_t out, int64_t in);
// y[i] = round_bf16(x[i]); y may alias x.
void round_bf16(float* y, const float* x, int64_t n);

// A linear layer's GEMMs at precision p (fp32 calls framework/gemm.h's linear_forward/backward
// unchanged, bit for bit). Shapes and accumulation as there: y[M,out] (+)= x W^T;
// dx[M,in] (+)= dy W (skipped when dx is null); dW[out,in] += dy^T x.
void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                    Precision p);
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                     int64_t out, bool accumulate_dx, Precision p);
// The bf16 layer with x given as bf16 bits [M, in]: rounded once by the caller and read by the
// forward GEMM and by backward's weight gradient (no rounding of x per GEMM). The same bits as the
// two above at Precision::BF16 with x the f32 values.
void linear_forward_bf16(float* y, const uint16_t* x, const float* W, int64_t M, int64_t in, int64_t out,
                         bool accumulate);
void linear_backward_bf16(float* dx, float* dW, const float* dy, const uint16_t* x, const float* W, int64_t M,
                          int64_t in, int64_t out, bool accumulate_dx);

}  // namespace moe
