#include "framework/cuda/linear.h"

#include <memory>
#include <vector>

#include "framework/bf16_weights.h"
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

// W[n] in one form of T values as a GEMM reads it, made by make() (a DeviceBuffer<T>): the copy
// kept while the weights cannot change (an open Bf16WeightScope, bf16_weights.h: made once per
// step, or per FSDP gather, instead of once per GEMM), else a copy owned here for this GEMM.
template <class T>
struct WeightBuffer {
  const T* p = nullptr;
  DeviceBuffer<T> owned;
};

template <class T, class Make>
WeightBuffer<T> weight_buffer(const float* W, int64_t n, WeightForm form, Make make) {
  WeightBuffer<T> w;
  w.p = static_cast<const T*>(weights_kept(W, n, form, n * int64_t(sizeof(T)), [&] {
    auto copy = std::make_shared<DeviceBuffer<T>>(make());
    return KeptCopy(copy, copy->get());  // shares the buffer's ownership
  }));
  if (!w.p) {
    w.owned = make();
    w.p = w.owned.get();
  }
  return w;
}

using Bf16Weights = WeightBuffer<uint16_t>;

Bf16Weights weights_bf16(const float* W, int64_t n, cudaStream_t s) {
  return weight_buffer<uint16_t>(W, n, WeightForm::Bf16, [&] { return to_bf16(W, n, s); });
}

// W[out, in] at fp8 as a GEMM reads it: its E4M3 operand (plan.Y: W's 128x128 blocks, transposed
// for dgrad) or its fake-quantised f32 values (the fallback GEMM's). Kept while the weights cannot
// change, like the bf16 copies (WeightForm::Fp8Forward / Fp8Dgrad / Fp8Blocks, bf16_weights.h:
// quantised once per step or per FSDP gather instead of once per GEMM), else owned here.
struct Fp8WeightOperand {
  Fp8OperandRef ref;
  Fp8Operand owned;
};

Fp8WeightOperand fp8_weight_operand(const float* W, const Fp8LinearPlan& p, bool dgrad, int64_t in, int64_t out,
                                    cudaStream_t s) {
  auto make = [&] { return fp8_operand(W, p.Y.R, p.Y.C, p.Y.transpose, p.Y.blocks, s); };
  const kern::Fp8OperandLayout L = fp8_layout(p.Y);
  const int64_t bytes = L.code_count() + L.scale_count() * int64_t(sizeof(float));
  Fp8WeightOperand w;
  const void* kept = weights_kept(W, out * in, dgrad ? WeightForm::Fp8Dgrad : WeightForm::Fp8Forward, bytes,
                                  [&] { return KeptCopy(std::make_shared<const Fp8Operand>(make())); });
  if (kept) {
    w.ref = *static_cast<const Fp8Operand*>(kept);
  } else {
    w.owned = make();
    w.ref = w.owned;
  }
  return w;
}

WeightBuffer<float> fp8_weight_values(const float* W, int64_t in, int64_t out, cudaStream_t s) {
  return weight_buffer<float>(W, out * in, WeightForm::Fp8Blocks, [&] { return fp8_copy(W, out, in, kTile, kTile, s); });
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

// wgrad as a real FP8 GEMM (fp8_gemm.h): dy^T and x^T quantised along the tokens (transposed
// copies), then cuBLASLt's block-scaled matmul into dW. False, with dW untouched, when the shape
// rule or cuBLASLt declines it.
bool fp8_wgrad_gemm(float* dW, const float* x, const float* dy, int64_t M, int64_t in, int64_t out, cudaStream_t s) {
  const Fp8LinearPlan p = fp8_linear_plan(LinearGemm::Wgrad, M, in, out);
  if (!fp8_gemm_shape_ok(p.Mr, p.Nr)) return false;
  const Fp8Operand X = fp8_operand(dy, p.X.R, p.X.C, p.X.transpose, p.X.blocks, s),
                   Y = fp8_operand(x, p.Y.R, p.Y.C, p.Y.transpose, p.Y.blocks, s);
  return fp8_gemm(dW, p.Nr, X, Y, 1.f, s);
}

// E4M3 rows in device memory.
struct DeviceRows {
  DeviceBuffer<uint8_t> codes;
  DeviceBuffer<float> scales;
  kern::Fp8Rows rows;
  DeviceRows(int64_t n, int64_t cols)
      : codes(n * kern::Fp8Rows::ld_of(cols)), scales(n * kern::Fp8Rows::tiles_of(cols)),
        rows{codes.get(), scales.get(), n, cols} {}
};

// C[X.rows, Nr] = X Y^T (+ C when accumulate; row stride Nr) as FP8 GEMMs over X's codes in place:
// the rows up to the last multiple of 16 in one GEMM, the rest (fewer than 16: an expert's group
// rarely has a multiple of 16 rows) through a 16-row copy whose extra rows are zero codes, into a
// scratch output copied or added into C. Returns how many rows from the first were computed: 0 (C
// untouched), the body's, or all, as cuBLASLt accepts the shapes; the caller does the rest.
int64_t fp8_gemm_rows(float* C, const kern::Fp8Rows& X, const Fp8OperandRef& Y, bool accumulate, cudaStream_t s) {
  const int64_t Nr = Y.layout.outer, body = X.rows / kFp8GemmMultiple * kFp8GemmMultiple, tail = X.rows - body;
  if (body > 0 && !fp8_gemm(C, Nr, fp8_rows_operand(X.slice(0, body), s).ref, Y, accumulate ? 1.f : 0.f, s)) return 0;
  if (tail == 0) return body;
  DeviceRows pad(kFp8GemmMultiple, X.cols);
  pad.codes.zero(s);
  pad.scales.zero(s);
  const kern::Fp8Rows t = X.slice(body, tail);
  MOE_CUDA_CHECK(cudaMemcpyAsync(pad.codes.get(), t.codes, size_t(tail * t.ld()), cudaMemcpyDeviceToDevice, s));
  MOE_CUDA_CHECK(
      cudaMemcpyAsync(pad.scales.get(), t.scales, size_t(tail * t.tiles()) * 4, cudaMemcpyDeviceToDevice, s));
  DeviceBuffer<float> out(kFp8GemmMultiple * Nr);
  if (!fp8_gemm(out.get(), Nr, fp8_rows_operand(pad.rows, s).ref, Y, 0.f, s)) return body;
  float* c = C + body * Nr;
  if (accumulate)
    add(c, c, out.get(), tail * Nr, s);
  else
    MOE_CUDA_CHECK(cudaMemcpyAsync(c, out.get(), size_t(tail * Nr) * 4, cudaMemcpyDeviceToDevice, s));
  return X.rows;
}

// forward C[M, out] = X W^T (X [M, in]) or dgrad C[M, in] = X W (X = dy's rows [M, out]) at fp8:
// FP8 GEMMs over X's rows with W's 128x128 blocks (transposed for dgrad), and the rows they did not
// take through the de-quantised codes and the fake-quantised W in an f32 GEMM (the same values, to
// the order of the f32 accumulation).
void fp8_rows_times_w(float* C, const kern::Fp8Rows& X, const float* W, bool dgrad, int64_t in, int64_t out,
                      bool accumulate, cudaStream_t s) {
  const Fp8LinearPlan p = fp8_linear_plan(dgrad ? LinearGemm::Dgrad : LinearGemm::Forward, X.rows, in, out);
  int64_t done = 0;
  if (fp8_gemm_shape_ok(kFp8GemmMultiple, p.Nr)) {
    const Fp8WeightOperand Y = fp8_weight_operand(W, p, dgrad, in, out, s);
    done = fp8_gemm_rows(C, X, Y.ref, accumulate, s);
  }
  if (done == X.rows) return;
  const kern::Fp8Rows rest = X.slice(done, X.rows - done);
  DeviceBuffer<float> xq(rest.rows * rest.cols);
  dequantize_rows(xq.get(), rest, s);
  const WeightBuffer<float> Wq = fp8_weight_values(W, in, out, s);
  if (dgrad)
    dgrad_gemm(C + done * in, xq.get(), Wq.p, rest.rows, in, out, accumulate, DType::F32, s);
  else
    forward_gemm(C + done * out, xq.get(), Wq.p, rest.rows, in, out, accumulate, DType::F32, s);
}

}  // namespace

void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                    Precision p, cudaStream_t s) {
  if (M == 0) return;
  switch (p) {
    case Precision::FP32:
      return forward_gemm(y, x, W, M, in, out, accumulate, DType::F32, s);
    case Precision::BF16: {
      auto xb = to_bf16(x, M * in, s);
      return linear_forward_bf16(y, xb.get(), W, M, in, out, accumulate, s);
    }
    case Precision::FP8: {
      // x's 1x128 tiles are the rows' tiles (kernels/fp8_rows.h): quantise, then the GEMM on rows.
      DeviceRows xr(M, in);
      quantize_rows(xr.rows, x, s);
      return fp8_rows_times_w(y, xr.rows, W, /*dgrad=*/false, in, out, accumulate, s);
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
      DeviceBuffer<uint16_t> xb;  // x is read by wgrad only
      if (dW) xb = to_bf16(x, M * in, s);
      return linear_backward_bf16(dx, dW, dy, xb.get(), W, M, in, out, accumulate_dx, s);
    }
    case Precision::FP8:
      // dgrad reduces over out (dy 1x128 along out: dy's rows, W's 128x128 blocks), wgrad over the
      // tokens (dy and x 128x1 along M), so dy is quantised once for each. Each GEMM is a real FP8
      // GEMM where it qualifies, else the fake-quantised f32 fallback (the same values).
      if (dx) {
        DeviceRows dyr(M, out);
        quantize_rows(dyr.rows, dy, s);
        fp8_rows_times_w(dx, dyr.rows, W, /*dgrad=*/true, in, out, accumulate_dx, s);
      }
      if (dW && !fp8_wgrad_gemm(dW, x, dy, M, in, out, s)) {
        auto dyq = fp8_copy(dy, M, out, kTile, 1, s), xq = fp8_copy(x, M, in, kTile, 1, s);
        wgrad_gemm(dW, dyq.get(), xq.get(), M, in, out, DType::F32, s);
      }
      return;
  }
}

void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate,
                        cudaStream_t s) {
  if (x.rows > 0) fp8_rows_times_w(y, x, W, /*dgrad=*/false, x.cols, out, accumulate, s);
}

void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                int64_t G, int64_t out, cudaStream_t s) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n > 0) linear_forward_fp8(y + r0 * out, x.slice(r0, n), W[g], out, false, s);
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
    if (n > 0 && (dx || dW[g]))
      linear_backward(dx ? dx + r0 * in : nullptr, dW[g], dy + r0 * out, x + r0 * in, W[g], n, in, out, accumulate_dx,
                      p, s);
  }
}

namespace {

// bf16 storage of rows offsets[0] .. offsets[G] of a [*, C] operand, cast once for all groups.
struct Bf16GroupRows {
  int64_t first = 0, C = 0;
  DeviceBuffer<uint16_t> rows;
  const uint16_t* row(int64_t r) const { return rows.get() + (r - first) * C; }
};

Bf16GroupRows bf16_group_rows(const float* a, const int64_t* offsets, int64_t G, int64_t C, cudaStream_t s) {
  Bf16GroupRows g;
  g.first = offsets[0];
  g.C = C;
  g.rows = to_bf16(a + g.first * C, (offsets[G] - offsets[0]) * C, s);
  return g;
}

// bf16 weights of the groups with rows (the others are never read), kept for the step.
std::vector<Bf16Weights> bf16_group_weights(const float* const* W, const int64_t* offsets, int64_t G, int64_t n,
                                            cudaStream_t s) {
  std::vector<Bf16Weights> w(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g)
    if (offsets[g + 1] > offsets[g]) w[size_t(g)] = weights_bf16(W[g], n, s);
  return w;
}

// bf16: one cuBLASLt GEMM per group on bf16 storage with f32 output, the dense layers' GEMMs
// (cuBLAS's grouped GEMM takes bf16 inputs only with bf16 outputs, which would round y, dx and dW).
// x: the groups' rows as bf16 (row offsets[0] first), cast here or by the caller.
void grouped_forward_bf16(float* y, const uint16_t* x, const float* const* W, const int64_t* offsets, int64_t G,
                          int64_t in, int64_t out, cudaStream_t s) {
  const std::vector<Bf16Weights> Wb = bf16_group_weights(W, offsets, G, out * in, s);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n > 0)
      forward_gemm(y + r0 * out, x + (r0 - offsets[0]) * in, Wb[size_t(g)].p, n, in, out, false, DType::BF16, s);
  }
}

void grouped_backward_bf16(float* dx, float* const* dW, const float* dy, const uint16_t* x, const float* const* W,
                           const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                           cudaStream_t s) {
  const Bf16GroupRows dyb = bf16_group_rows(dy, offsets, G, out, s);
  std::vector<Bf16Weights> Wb;
  if (dx) Wb = bf16_group_weights(W, offsets, G, out * in, s);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n == 0) continue;
    if (dx) dgrad_gemm(dx + r0 * in, dyb.row(r0), Wb[size_t(g)].p, n, in, out, accumulate_dx, DType::BF16, s);
    if (dW[g]) wgrad_gemm(dW[g], dyb.row(r0), x + (r0 - offsets[0]) * in, n, in, out, DType::BF16, s);
  }
}

}  // namespace

void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                            int64_t in, int64_t out, Precision p, cudaStream_t s) {
  if (p == Precision::FP8) return grouped_linear_forward_loop(y, x, W, offsets, G, in, out, p, s);
  if (p == Precision::BF16) {
    const Bf16GroupRows xb = bf16_group_rows(x, offsets, G, in, s);
    return grouped_forward_bf16(y, xb.row(offsets[0]), W, offsets, G, in, out, s);
  }
  std::vector<GemmProblem> problems;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n == 0) continue;
    // y_g[n, out] = x_g[n, in] W_g^T
    problems.push_back({false, true, n, out, in, x + r0 * in, in, W[g], in, y + r0 * out, out});
  }
  gemm_grouped(problems, 1.f, 0.f, s);
}

void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                             const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                             Precision p, cudaStream_t s) {
  if (p == Precision::FP8)
    return grouped_linear_backward_loop(dx, dW, dy, x, W, offsets, G, in, out, accumulate_dx, p, s);
  bool any_dW = false;
  for (int64_t g = 0; g < G; ++g) any_dW = any_dW || dW[g];
  if (p == Precision::BF16) {
    Bf16GroupRows xb;  // x is read by wgrad only
    if (any_dW) xb = bf16_group_rows(x, offsets, G, in, s);
    return grouped_backward_bf16(dx, dW, dy, any_dW ? xb.row(offsets[0]) : nullptr, W, offsets, G, in, out,
                                 accumulate_dx, s);
  }
  std::vector<GemmProblem> dgrad, wgrad;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n == 0) continue;
    // dx_g[n, in] (+)= dy_g[n, out] W_g ; dW_g[out, in] += dy_g^T x_g
    if (dx) dgrad.push_back({false, false, n, in, out, dy + r0 * out, out, W[g], in, dx + r0 * in, in});
    if (dW[g]) wgrad.push_back({true, false, out, in, n, dy + r0 * out, out, x + r0 * in, in, dW[g], in});
  }
  gemm_grouped(dgrad, 1.f, accumulate_dx ? 1.f : 0.f, s);
  gemm_grouped(wgrad, 1.f, 1.f, s);
}

void linear_forward_bf16(float* y, const uint16_t* x, const float* W, int64_t M, int64_t in, int64_t out,
                         bool accumulate, cudaStream_t s) {
  if (M == 0) return;
  forward_gemm(y, x, weights_bf16(W, out * in, s).p, M, in, out, accumulate, DType::BF16, s);
}

void linear_backward_bf16(float* dx, float* dW, const float* dy, const uint16_t* x, const float* W, int64_t M,
                          int64_t in, int64_t out, bool accumulate_dx, cudaStream_t s) {
  if (M == 0) return;
  auto dyb = to_bf16(dy, M * out, s);  // one rounding of dy serves both GEMMs
  if (dx) dgrad_gemm(dx, dyb.get(), weights_bf16(W, out * in, s).p, M, in, out, accumulate_dx, DType::BF16, s);
  if (dW) wgrad_gemm(dW, dyb.get(), x, M, in, out, DType::BF16, s);
}

void grouped_linear_forward_bf16(float* y, const uint16_t* x, const float* const* W, const int64_t* offsets,
                                 int64_t G, int64_t in, int64_t out, cudaStream_t s) {
  grouped_forward_bf16(y, x + offsets[0] * in, W, offsets, G, in, out, s);
}

void grouped_linear_backward_bf16(float* dx, float* const* dW, const float* dy, const uint16_t* x,
                                  const float* const* W, const int64_t* offsets, int64_t G, int64_t in, int64_t out,
                                  bool accumulate_dx, cudaStream_t s) {
  grouped_backward_bf16(dx, dW, dy, x + offsets[0] * in, W, offsets, G, in, out, accumulate_dx, s);
}

}  // namespace moe::cuda
