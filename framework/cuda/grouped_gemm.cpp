#include "framework/cuda/grouped_gemm.h"

#include <cublas_v2.h>

#include "framework/cuda/allocator.h"
#include "framework/cuda/check.h"
#include "framework/cuda/gemm.h"
#include "framework/error.h"

namespace moe::cuda {
namespace {

// A cuBLAS handle per thread and device (as gemm.cpp keeps its cuBLASLt handle).
struct CublasHandle {
  int device = -1;
  cublasHandle_t handle = nullptr;
  ~CublasHandle() { reset(); }
  void reset() {
    if (handle) cublasDestroy(handle);
    handle = nullptr;
    device = -1;
  }
};

cublasHandle_t cublas_handle() {
  thread_local CublasHandle h;
  int dev = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  if (h.device != dev) {
    h.reset();
    MOE_CUBLAS_CHECK(cublasCreate(&h.handle));
    h.device = dev;
  }
  return h.handle;
}

}  // namespace

void gemm_grouped(const std::vector<GemmProblem>& problems, float alpha, float beta, cudaStream_t stream) {
  const size_t n = problems.size();
  if (n == 0) return;
  // One group per problem (group_size 1): the shapes differ from expert to expert.
  std::vector<cublasOperation_t> ta(n), tb(n);
  std::vector<int64_t> m(n), nn(n), k(n), lda(n), ldb(n), ldc(n), group_size(n, 1);
  std::vector<float> alphas(n, alpha), betas(n, beta);
  // [first..., second..., out...]; the inputs are only read (const_cast: one array type for all).
  std::vector<void*> pointers(3 * n);
  for (size_t i = 0; i < n; ++i) {
    const GemmProblem& p = problems[i];
    MOE_CHECK(p.M > 0 && p.N > 0 && p.K > 0, "cuda::gemm_grouped: problem ", i, " is ", p.M, "x", p.N, "x", p.K);
    const ColMajorGemm g = to_col_major(p.trans_a, p.trans_b, p.M, p.N, p.K, p.A, p.lda, p.B, p.ldb, p.ldc);
    ta[i] = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
    tb[i] = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = g.m, nn[i] = g.n, k[i] = g.k;
    lda[i] = g.ld_first, ldb[i] = g.ld_second, ldc[i] = g.ld_out;
    pointers[i] = const_cast<void*>(g.first);
    pointers[n + i] = const_cast<void*>(g.second);
    pointers[2 * n + i] = p.C;
  }
  // cuBLAS reads the pointer arrays on the device; the sizes, strides and scalars from the host.
  // cudaMemcpyAsync from pageable memory has copied the host array when it returns, so `pointers`
  // may go out of scope; the device copy is freed after the call is queued, which the one-stream
  // rule of the caching allocator makes safe.
  DeviceBuffer<void*> device_pointers(int64_t(3 * n));
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_pointers.get(), pointers.data(), sizeof(void*) * 3 * n,
                                 cudaMemcpyHostToDevice, stream));
  void* const* first = device_pointers.get();
  void* const* second = first + n;
  void* const* out = second + n;
  cublasHandle_t h = cublas_handle();
  MOE_CUBLAS_CHECK(cublasSetStream(h, stream));
  MOE_CUBLAS_CHECK(cublasGemmGroupedBatchedEx_64(h, ta.data(), tb.data(), m.data(), nn.data(), k.data(), alphas.data(),
                                                 first, CUDA_R_32F, lda.data(), second, CUDA_R_32F, ldb.data(),
                                                 betas.data(), out, CUDA_R_32F, ldc.data(), int64_t(n),
                                                 group_size.data(), CUBLAS_COMPUTE_32F));
}

}  // namespace moe::cuda
