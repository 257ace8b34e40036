#include "framework/cuda/gemm.h"

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "framework/cuda/allocator.h"
#include "framework/cuda/check.h"
#include "framework/cuda/lt_context.h"

namespace moe::cuda {

ColMajorGemm to_col_major(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                          const void* B, int64_t ldb, int64_t ldc) {
  ColMajorGemm g;
  g.trans_first = trans_b;
  g.trans_second = trans_a;
  g.m = N;
  g.n = M;
  g.k = K;
  g.first = B;
  g.ld_first = ldb;
  g.second = A;
  g.ld_second = lda;
  g.ld_out = ldc;
  return g;
}

ColMajorGemm to_col_major_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                                  int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b,
                                  int64_t ldc, int64_t stride_c, int64_t batch) {
  ColMajorGemm g = to_col_major(trans_a, trans_b, M, N, K, A, lda, B, ldb, ldc);
  g.batch = batch;
  g.stride_first = stride_b;
  g.stride_second = stride_a;
  g.stride_out = stride_c;
  return g;
}

namespace {

// cuBLASLt recommends at least 32 MiB of workspace on Hopper.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: break;
  }
  throw error("cuda::gemm: element type ", dtype_name(t), " (expected f32 or bf16)");
}

// One problem shape's descriptors and the algorithm the heuristic chose for it.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Shape, strides, types and the operands' alignments: cuBLASLt's heuristic assumes 256-byte aligned
// pointers unless told otherwise, and GEMMs on sub-matrices (a weight's rows, a chunk of tokens)
// pass less aligned ones.
// Batched plans add the batch count and strides.
using PlanKey = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t,
                           uint32_t, uint32_t, int64_t, int64_t, int64_t, int64_t>;

// The largest power of two up to 256 that divides the address, and, in a batch, every problem's
// address (base + i * stride bytes): the lowest set bit of (address | stride bytes).
uint32_t alignment(const void* p, int64_t stride_bytes = 0) {
  const auto a = reinterpret_cast<uintptr_t>(p) | uintptr_t(stride_bytes);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

size_t element_bytes(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

// Per thread (cuBLASLt handles are not to be shared between threads without care), per device.
struct ThreadState {
  int device = -1;
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer<unsigned char> workspace;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
  ~ThreadState() { reset(); }
  void reset() {
    plans.clear();
    workspace.reset();
    if (handle) cublasLtDestroy(handle);
    handle = nullptr;
    device = -1;
  }
};

ThreadState& thread_state() {
  thread_local ThreadState st;
  int dev = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  if (st.device != dev) {
    st.reset();
    MOE_CUBLAS_CHECK(cublasLtCreate(&st.handle));
    st.workspace = DeviceBuffer<unsigned char>(int64_t(kWorkspaceBytes));
    st.device = dev;
  }
  return st;
}

// A strided batch on one matrix layout (batch 1: nothing to set).
void set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  if (batch == 1) return;
  const int32_t count = int32_t(batch);
  MOE_CUBLAS_CHECK(
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  MOE_CUBLAS_CHECK(
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

Plan& plan_for(ThreadState& st, const ColMajorGemm& g, const void* out, cudaDataType_t ab, cudaDataType_t c) {
  const bool batched = g.batch > 1;
  const int64_t ab_bytes = int64_t(element_bytes(ab)), c_bytes = int64_t(element_bytes(c));
  const uint32_t al_first = alignment(g.first, batched ? g.stride_first * ab_bytes : 0);
  const uint32_t al_second = alignment(g.second, batched ? g.stride_second * ab_bytes : 0);
  const uint32_t al_out = alignment(out, batched ? g.stride_out * c_bytes : 0);
  PlanKey key{g.trans_first, g.trans_second, g.m, g.n, g.k, g.ld_first, g.ld_second, g.ld_out, int(ab), int(c),
              al_first, al_second, al_out, g.batch, batched ? g.stride_first : 0, batched ? g.stride_second : 0,
              batched ? g.stride_out : 0};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  MOE_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->a, ab, uint64_t(g.first_rows()), uint64_t(g.first_cols()), g.ld_first));
  MOE_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->b, ab, uint64_t(g.second_rows()), uint64_t(g.second_cols()), g.ld_second));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, c, uint64_t(g.m), uint64_t(g.n), g.ld_out));
  set_batch(p->a, g.batch, g.stride_first);
  set_batch(p->b, g.batch, g.stride_second);
  set_batch(p->c, g.batch, g.stride_out);
  cublasLtMatmulPreference_t pref = nullptr;
  MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                               sizeof(ws));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_first},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_second},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_out},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_out}};
  for (const auto& [attr, al] : aligns)
    if (status == CUBLAS_STATUS_SUCCESS) status = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(st.handle, p->op, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  MOE_CUBLAS_CHECK(status);
  if (found == 0)
    throw error("cuda::gemm: cuBLASLt has no algorithm for m=", g.m, " n=", g.n, " k=", g.k,
                " (expected shapes and strides cuBLASLt supports)");
  p->algo = result.algo;
  return *st.plans.emplace(key, std::move(p)).first->second;
}

void run(const ColMajorGemm& g, float alpha, float beta, void* C, DType ab_type, DType c_type, cudaStream_t stream) {
  ThreadState& st = thread_state();
  Plan& p = plan_for(st, g, C, cuda_type(ab_type), cuda_type(c_type));
  MOE_CUBLAS_CHECK(cublasLtMatmul(st.handle, p.op, &alpha, g.first, p.a, g.second, p.b, &beta, C, p.c, C, p.c,
                                  &p.algo, st.workspace.get(), kWorkspaceBytes, stream));
}

}  // namespace

LtContext lt_context() {
  ThreadState& st = thread_state();
  return {st.handle, st.workspace.get(), kWorkspaceBytes, st.device};
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
          const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType ab_type, DType c_type,
          cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  MOE_CHECK(K > 0, "cuda::gemm with K = 0");
  run(to_col_major(trans_a, trans_b, M, N, K, A, lda, B, ldb, ldc), alpha, beta, C, ab_type, c_type, stream);
}

void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta,
                          void* C, int64_t ldc, int64_t stride_c, int64_t batch, DType ab_type, DType c_type,
                          cudaStream_t stream) {
  if (M == 0 || N == 0 || batch == 0) return;
  MOE_CHECK(K > 0, "cuda::gemm_strided_batched with K = 0");
  MOE_CHECK(batch > 0 && batch <= INT32_MAX, "cuda::gemm_strided_batched: batch ", batch);
  run(to_col_major_batched(trans_a, trans_b, M, N, K, A, lda, stride_a, B, ldb, stride_b, ldc, stride_c, batch),
      alpha, beta, C, ab_type, c_type, stream);
}

}  // namespace moe::cuda
