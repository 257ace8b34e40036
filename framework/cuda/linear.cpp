#include "framework/cuda/linear.h"

#include <vector>

#include "framework/cuda/allocator.h"
#include "framework/cuda/fp8_gemm.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/grouped_gemm.h"
#include "framework/cuda/ops.h"
#include "framework/error.h"
#include "framework/kernels/fp8.h"

namespace moe::cuda {
namespace {

constexpr int64_t kTile = kern::kFp8Tile;

// A bf16 copy (storage) of n f32 values.
DeviceBuffer<uint16_t> to_bf16(const float* x, int64_t n, cudaStream_t stream) {
  DeviceBuffer<uint16_t> b(n);
  cast_f32_to_bf16(b.get(), x, n, stream);
  return b;
}

// A fake-quantised f32 copy of x[R,C] in tr x tc tiles.
DeviceBuffer<float> fp8_copy(const float* x, int64_t R, int64_t C, int64_t tr, int64_t tc, cudaStream_t stream) {
  DeviceBuffer<float> q(R * C);
  fp8_quantize(q.get(), x, R, C, tr, tc, stream);
  return q;
}

// The three GEMMs of a linear layer, operands of element type t (f32 or bf16 storage), f32 out.
void forward_gemm(float* y, const void* x, const void* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                  DType t, cudaStream_t s) {
  gemm(false, true, M, out, in, 1.f, x, in, W, in, accumulate ? 1.f : 0.f, y, out, t, DType::F32, s);
}
void dgrad_gemm(float* dx, const void* dy, const void* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                DType t, cudaStream_t s) {
  gemm(false, false, M, in, out, 1.f, dy, out, W, in, accumulate ? 1.f : 0.f, dx, in, t, DType::F32, s);
}
void wgrad_gemm(float* dW, const void* dy, const void* x, int64_t M, int64_t in, int64_t out, DType t,
                cudaStream_t s) {
  gemm(true, false, out, in, M, 1.f, dy, out, x, in, 1.f, dW, in, t, DType::F32, s);
}

// One GEMM of a linear layer as a real FP8 GEMM (fp8_gemm.h): its two operands quantised to E4M3
// codes with the CPU's scales, then cuBLASLt's block-scaled matmul into C (row stride Nr). False,
// with C untouched, when the shape rule or cuBLASLt declines it.
bool fp8_linear_gemm(LinearGemm kind, float* C, float beta, const float* x, const float* W, const float* dy,
                     int64_t M, int64_t in, int64_t out, cudaStream_t s) {
  const Fp8LinearPlan p = fp8_linear_plan(kind, M, in, out);
  if (!fp8_gemm_shape_ok(p.Mr, p.Nr)) return false;
  auto operand = [&](const Fp8OperandSpec& o) {
    const float* src = o.tensor == LinearTensor::X ? x : o.tensor == LinearTensor::W ? W : dy;
    return fp8_operand(src, o.R, o.C, o.transpose, o.blocks, s);
  };
  const Fp8Operand X = operand(p.X), Y = operand(p.Y);
  return fp8_gemm(C, p.Nr, X, Y, beta, s);
}

}  // namespace

void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                    Precision p, cudaStream_t s) {
  if (M == 0) return;
  switch (p) {
    case Precision::FP32:
      return forward_gemm(y, x, W, M, in, out, accumulate, DType::F32, s);
    case Precision::BF16: {
      auto xb = to_bf16(x, M * in, s), Wb = to_bf16(W, out * in, s);
      return forward_gemm(y, xb.get(), Wb.get(), M, in, out, accumulate, DType::BF16, s);
    }
    case Precision::FP8: {
      if (fp8_linear_gemm(LinearGemm::Forward, y, accumulate ? 1.f : 0.f, x, W, nullptr, M, in, out, s)) return;
      // Fallback (fp8_gemm_shape_ok, or cuBLASLt declined): the same quantised values, de-quantised,
      // through an f32 GEMM: the same result up to the order of the f32 accumulation.
      auto xq = fp8_copy(x, M, in, 1, kTile, s), Wq = fp8_copy(W, out, in, kTile, kTile, s);
      return forward_gemm(y, xq.get(), Wq.get(), M, in, out, accumulate, DType::F32, s);
    }
  }
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                     int64_t out, bool accumulate_dx, Precision p, cudaStream_t s) {
  if (M == 0) return;  // dx has no rows; dW gains nothing
  switch (p) {
    case Precision::FP32:
      if (dx) dgrad_gemm(dx, dy, W, M, in, out, accumulate_dx, DType::F32, s);
      if (dW) wgrad_gemm(dW, dy, x, M, in, out, DType::F32, s);
      return;
    case Precision::BF16: {
      auto dyb = to_bf16(dy, M * out, s);  // one rounding of dy serves both GEMMs
      if (dx) dgrad_gemm(dx, dyb.get(), to_bf16(W, out * in, s).get(), M, in, out, accumulate_dx, DType::BF16, s);
      if (dW) wgrad_gemm(dW, dyb.get(), to_bf16(x, M * in, s).get(), M, in, out, DType::BF16, s);
      return;
    }
    case Precision::FP8:
      // dgrad reduces over out (dy 1x128 along out, W's 128x128 blocks), wgrad over the tokens
      // (dy and x 128x1 along M), so dy is quantised once for each. Each GEMM is a real FP8 GEMM
      // where it qualifies, else the fake-quantised f32 fallback (see forward).
      if (dx && !fp8_linear_gemm(LinearGemm::Dgrad, dx, accumulate_dx ? 1.f : 0.f, nullptr, W, dy, M, in, out, s)) {
        auto dyq = fp8_copy(dy, M, out, 1, kTile, s), Wq = fp8_copy(W, out, in, kTile, kTile, s);
        dgrad_gemm(dx, dyq.get(), Wq.get(), M, in, out, accumulate_dx, DType::F32, s);
      }
      if (dW && !fp8_linear_gemm(LinearGemm::Wgrad, dW, 1.f, x, nullptr, dy, M, in, out, s)) {
        auto dyq = fp8_copy(dy, M, out, kTile, 1, s), xq = fp8_copy(x, M, in, kTile, 1, s);
        wgrad_gemm(dW, dyq.get(), xq.get(), M, in, out, DType::F32, s);
      }
      return;
  }
}

void grouped_linear_forward_loop(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                                 int64_t in, int64_t out, Precision p, cudaStream_t s) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n > 0) linear_forward(y + r0 * out, x + r0 * in, W[g], n, in, out, false, p, s);
  }
}

void grouped_linear_backward_loop(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                                  const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                                  Precision p, cudaStream_t s) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n > 0)
      linear_backward(dx ? dx + r0 * in : nullptr, dW[g], dy + r0 * out, x + r0 * in, W[g], n, in, out, accumulate_dx,
                      p, s);
  }
}

namespace {

// The rows of a [*, C] operand the groups read: the caller's, or (bf16) a copy of rows
// offsets[0] .. offsets[G] rounded to bf16 values kept in f32 (grouped_gemm.h says why).
struct GroupRows {
  const float* base = nullptr;  // row `first` of the operand
  int64_t first = 0, C = 0;
  DeviceBuffer<float> rounded;
  const float* row(int64_t r) const { return base + (r - first) * C; }
};

GroupRows group_rows(const float* a, const int64_t* offsets, int64_t G, int64_t C, bool round, cudaStream_t s) {
  GroupRows g;
  g.first = offsets[0];
  g.C = C;
  g.base = a + g.first * C;
  if (round) {
    const int64_t n = (offsets[G] - offsets[0]) * C;
    g.rounded = DeviceBuffer<float>(n);
    round_bf16(g.rounded.get(), g.base, n, s);
    g.base = g.rounded.get();
  }
  return g;
}

// bf16: rounded copies of the weights of the groups with rows (the others stay null: never read).
struct RoundedGroups {
  std::vector<DeviceBuffer<float>> weights;
  std::vector<const float*> weight_ptrs;
};

void rounded_weights(RoundedGroups& rg, const float* const* W, const int64_t* offsets, int64_t G, int64_t n,
                     cudaStream_t s) {
  rg.weight_ptrs.assign(size_t(G), nullptr);
  for (int64_t g = 0; g < G; ++g) {
    if (offsets[g + 1] == offsets[g]) continue;
    rg.weights.emplace_back(n);
    round_bf16(rg.weights.back().get(), W[g], n, s);
    rg.weight_ptrs[size_t(g)] = rg.weights.back().get();
  }
}

}  // namespace

void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                            int64_t in, int64_t out, Precision p, cudaStream_t s) {
  if (p == Precision::FP8) return grouped_linear_forward_loop(y, x, W, offsets, G, in, out, p, s);
  const bool round = p == Precision::BF16;
  const GroupRows xr = group_rows(x, offsets, G, in, round, s);
  RoundedGroups rg;
  if (round) {
    rounded_weights(rg, W, offsets, G, out * in, s);
    W = rg.weight_ptrs.data();
  }
  std::vector<GemmProblem> problems;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n == 0) continue;
    // y_g[n, out] = x_g[n, in] W_g^T
    problems.push_back({false, true, n, out, in, xr.row(r0), in, W[g], in, y + r0 * out, out});
  }
  gemm_grouped(problems, 1.f, 0.f, s);
}

void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                             const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                             Precision p, cudaStream_t s) {
  if (p == Precision::FP8)
    return grouped_linear_backward_loop(dx, dW, dy, x, W, offsets, G, in, out, accumulate_dx, p, s);
  const bool round = p == Precision::BF16;
  const GroupRows dyr = group_rows(dy, offsets, G, out, round, s), xr = group_rows(x, offsets, G, in, round, s);
  RoundedGroups rg;
  if (round && dx) {
    rounded_weights(rg, W, offsets, G, out * in, s);
    W = rg.weight_ptrs.data();
  }
  std::vector<GemmProblem> dgrad, wgrad;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n == 0) continue;
    // dx_g[n, in] (+)= dy_g[n, out] W_g ; dW_g[out, in] += dy_g^T x_g
    if (dx) dgrad.push_back({false, false, n, in, out, dyr.row(r0), out, W[g], in, dx + r0 * in, in});
    if (dW[g]) wgrad.push_back({true, false, out, in, n, dyr.row(r0), out, xr.row(r0), in, dW[g], in});
  }
  gemm_grouped(dgrad, 1.f, accumulate_dx ? 1.f : 0.f, s);
  gemm_grouped(wgrad, 1.f, 1.f, s);
}

}  // namespace moe::cuda
