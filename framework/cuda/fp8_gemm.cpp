#include "framework/cuda/fp8_gemm.h"

#include <cublasLt.h>

#include <atomic>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "framework/cuda/check.h"
#include "framework/cuda/lt_context.h"
#include "framework/error.h"

namespace moe::cuda {

bool fp8_gemm_shape_ok(int64_t Mr, int64_t Nr) {
  return Mr > 0 && Nr > 0 && Mr % kFp8GemmMultiple == 0 && Nr % kFp8GemmMultiple == 0;
}

Fp8ColMajorGemm fp8_to_col_major(const kern::Fp8OperandLayout& X, const kern::Fp8OperandLayout& Y, int64_t ldc) {
  MOE_CHECK(X.K == Y.K && X.ld == Y.ld, "fp8_gemm: operands with K ", X.K, " and ", Y.K);
  Fp8ColMajorGemm g;
  g.m = Y.outer;
  g.n = X.outer;
  g.k = X.ld;
  g.lda = Y.ld;
  g.ldb = X.ld;
  g.ldd = ldc;
  g.a_blocks = Y.blocks;
  g.b_blocks = X.blocks;
  return g;
}

Fp8LinearPlan fp8_linear_plan(LinearGemm g, int64_t M, int64_t in, int64_t out) {
  using T = LinearTensor;
  Fp8LinearPlan p;
  switch (g) {
    case LinearGemm::Forward:  // y[M, out] = x[M, in] W[out, in]^T
      p.X = {T::X, M, in, false, false};
      p.Y = {T::W, out, in, false, true};
      p.Mr = M;
      p.Nr = out;
      break;
    case LinearGemm::Dgrad:  // dx[M, in] = dy[M, out] (W^T)[in, out]^T
      p.X = {T::DY, M, out, false, false};
      p.Y = {T::W, out, in, true, true};
      p.Mr = M;
      p.Nr = in;
      break;
    case LinearGemm::Wgrad:  // dW[out, in] += (dy^T)[out, M] (x^T)[in, M]^T
      p.X = {T::DY, M, out, true, false};
      p.Y = {T::X, M, in, true, false};
      p.Mr = out;
      p.Nr = in;
      break;
  }
  return p;
}

kern::Fp8OperandLayout fp8_layout(const Fp8OperandSpec& s) {
  return kern::Fp8OperandLayout::make(s.transpose ? s.C : s.R, s.transpose ? s.R : s.C, s.blocks);
}

namespace {

std::atomic<int64_t> g_ran{0}, g_declined{0};

// One problem's descriptors and algorithm; ok is false when cuBLASLt has none (remembered, so a
// declined shape costs one heuristic query per thread).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// device, m, n, k, lda, ldb, ldd, scale modes, alignments of A, B and D.
using PlanKey =
    std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t>;

uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

int32_t scale_mode(bool blocks) {
  return int32_t(blocks ? CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F);
}

// The scale pointers live in the (cached) descriptor: set them for every call.
void set_scales(cublasLtMatmulDesc_t op, const float* a_scales, const float* b_scales) {
  const void* pa = a_scales;
  const void* pb = b_scales;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof(pa)));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof(pb)));
}

Plan& plan_for(const LtContext& lt, const Fp8ColMajorGemm& g, const void* A, const void* B, const float* D,
               const float* a_scales, const float* b_scales) {
  thread_local std::map<PlanKey, std::unique_ptr<Plan>> plans;
  const uint32_t al_a = alignment(A), al_b = alignment(B), al_d = alignment(D);
  const PlanKey key{lt.device, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, g.a_blocks, g.b_blocks, al_a, al_b, al_d};
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  // The 1x128 / 128x128 block scales are Hopper's (cuBLAS 12.9+); sm_80 has no FP8 tensor cores and
  // Blackwell's cuBLASLt takes other scale modes (MXFP8), so anything but sm_90 declines.
  int major = 0;
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, lt.device));
  if (major != 9) return *plans.emplace(key, std::move(p)).first->second;
  // E4M3 x E4M3 -> f32 with f32 accumulation, no fast accumulation (block scaling requires the
  // scales to be applied per 128 K, which cuBLASLt does when FAST_ACCUM is off, its default).
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;  // "TN": both operands K-major
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const int32_t a_mode = scale_mode(g.a_blocks), b_mode = scale_mode(g.b_blocks);
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)));
  set_scales(p->op, a_scales, b_scales);
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, uint64_t(g.k), uint64_t(g.m), g.lda));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, uint64_t(g.k), uint64_t(g.n), g.ldb));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, uint64_t(g.m), uint64_t(g.n), g.ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = lt.workspace_bytes;
  cublasStatus_t status =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  // Codes may be rows inside an activation's codes (128-byte aligned), D a sub-matrix: the
  // algorithm must accept the pointers' real alignments.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}};
  for (const auto& [attr, al] : aligns)
    if (status == CUBLAS_STATUS_SUCCESS) status = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(lt.handle, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED / ARCH_MISMATCH (a combination this GPU or library lacks) decline; others throw.
  const bool unsupported = status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_ARCH_MISMATCH;
  if (!unsupported) MOE_CUBLAS_CHECK(status);
  p->ok = status == CUBLAS_STATUS_SUCCESS && found > 0;
  p->algo = result.algo;
  return *plans.emplace(key, std::move(p)).first->second;
}

}  // namespace

bool fp8_gemm(float* C, int64_t ldc, const Fp8OperandRef& X, const Fp8OperandRef& Y, float beta,
              cudaStream_t stream) {
  if (!fp8_gemm_shape_ok(X.layout.outer, Y.layout.outer) || ldc < Y.layout.outer) {
    ++g_declined;
    return false;
  }
  const Fp8ColMajorGemm g = fp8_to_col_major(X.layout, Y.layout, ldc);
  const LtContext lt = lt_context();
  // A = Y, B = X (fp8_to_col_major).
  Plan& p = plan_for(lt, g, Y.codes, X.codes, C, Y.scales, X.scales);
  if (!p.ok) {
    ++g_declined;
    return false;
  }
  set_scales(p.op, Y.scales, X.scales);
  const float alpha = 1.f;
  MOE_CUBLAS_CHECK(cublasLtMatmul(lt.handle, p.op, &alpha, Y.codes, p.a, X.codes, p.b, &beta, C, p.d, C,
                                  p.d, &p.algo, lt.workspace, lt.workspace_bytes, stream));
  ++g_ran;
  return true;
}

Fp8GemmCounts fp8_gemm_counts() { return {g_ran.load(), g_declined.load()}; }

}  // namespace moe::cuda
