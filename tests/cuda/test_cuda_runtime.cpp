// The host side of the CUDA backend, which runs without a GPU: the checked-call macros report
// file:line and the library's own error string; device detection reports no device with a reason
// instead of failing; and the row-major -> column-major mapping of the cuBLASLt GEMM, checked by
// evaluating the mapped column-major problem on the CPU against framework/gemm.h.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "framework/cuda/attention.h"
#include "framework/cuda/check.h"
#include "framework/cuda/device.h"
#include "framework/cuda/gemm.h"
#include "framework/gemm.h"

using namespace moe;

namespace {

template <class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const cuda::CudaError& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST(CudaCheck, RuntimeErrorsNameTheCallAndTheReason) {
  const int line = __LINE__ + 1;
  const std::string msg = message_of([] { MOE_CUDA_CHECK(cudaErrorMemoryAllocation); });
  EXPECT_NE(msg.find("test_cuda_runtime.cpp:" + std::to_string(line) + ": cudaErrorMemoryAllocation failed: "
                     "cudaErrorMemoryAllocation (out of memory)"),
            std::string::npos)
      << msg;
  EXPECT_NO_THROW(MOE_CUDA_CHECK(cudaSuccess));
}

TEST(CudaCheck, CublasAndCudnnErrorsCarryTheLibraryString) {
  const std::string msg = message_of([] { MOE_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED); });
  EXPECT_NE(msg.find("CUBLAS_STATUS_NOT_SUPPORTED failed: CUBLAS_STATUS_NOT_SUPPORTED ("), std::string::npos) << msg;
  EXPECT_NE(msg.find("test_cuda_runtime.cpp:"), std::string::npos) << msg;
  EXPECT_NO_THROW(MOE_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
#if defined(MOE_HAVE_CUDNN)
  const std::string dnn = message_of([] { MOE_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); });
  EXPECT_NE(dnn.find("CUDNN_STATUS_BAD_PARAM failed: CUDNN_STATUS_BAD_PARAM"), std::string::npos) << dnn;
#endif
  // A CudaError is a moe::Error: the CLI prints it as one line and exits 2.
  EXPECT_THROW(MOE_CUDA_CHECK(cudaErrorInvalidValue), Error);
}

TEST(CudaDevice, CountingDevicesNeverThrows) {
  std::string why;
  const int n = cuda::device_count(&why);
  EXPECT_GE(n, 0);
  if (n == 0) {
    EXPECT_FALSE(why.empty()) << "no device, and no reason given";
  }
  EXPECT_EQ(cuda::available(), n > 0);
}

// D[m,n] = op(first) op(second) in column-major storage, straight from the definition.
static void col_major_gemm(const cuda::ColMajorGemm& g, const float* first, const float* second, float* out) {
  for (int64_t j = 0; j < g.n; ++j)
    for (int64_t i = 0; i < g.m; ++i) {
      double s = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        const float a = g.trans_first ? first[i * g.ld_first + p] : first[p * g.ld_first + i];
        const float b = g.trans_second ? second[p * g.ld_second + j] : second[j * g.ld_second + p];
        s += double(a) * b;
      }
      out[j * g.ld_out + i] = float(s);
    }
}

TEST(CudaGemm, RowMajorMapsToTheColumnMajorProblem) {
  const int64_t M = 5, N = 7, K = 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> d;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // Padded row strides, as the GEMMs on sub-matrices use.
      const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3;
      std::vector<float> A(size_t((ta ? K : M) * lda)), B(size_t((tb ? N : K) * ldb));
      for (float& v : A) v = d(rng);
      for (float& v : B) v = d(rng);
      std::vector<float> want(size_t(M * ldc), 0.f), got(size_t(M * ldc), 0.f);
      gemm(ta, tb, M, N, K, 1.f, A.data(), lda, B.data(), ldb, 0.f, want.data(), ldc);
      const cuda::ColMajorGemm g = cuda::to_col_major(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, ldc);
      EXPECT_EQ(g.first, B.data());
      EXPECT_EQ(g.second, A.data());
      // The layouts handed to cuBLASLt must fit inside the stored matrices.
      EXPECT_LE(g.first_rows(), g.ld_first);
      EXPECT_LE(g.second_rows(), g.ld_second);
      EXPECT_LE(g.m, g.ld_out);
      col_major_gemm(g, B.data(), A.data(), got.data());
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
          EXPECT_NEAR(got[i * ldc + j], want[i * ldc + j], 1e-5) << "ta " << ta << " tb " << tb;
    }
}

// A strided batch as the attention core uses it: heads side by side inside rows (the batch stride
// smaller than a matrix), every transpose. Problem i of the mapped batch, evaluated column-major,
// must be the row-major GEMM of head i.
TEST(CudaGemm, StridedBatchMapsHeadByHead) {
  const int64_t M = 4, N = 6, K = 3, H = 3;
  std::mt19937 rng(2);
  std::normal_distribution<float> d;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // Operand rows hold H heads of (ta ? M : K) or (tb ? K : N) values; C is [H, M, N] contiguous.
      const int64_t a_cols = ta ? M : K, b_cols = tb ? K : N;
      const int64_t lda = H * a_cols, ldb = H * b_cols + 1, ldc = N, stride_c = M * N;
      std::vector<float> A(size_t((ta ? K : M) * lda)), B(size_t((tb ? N : K) * ldb));
      for (float& v : A) v = d(rng);
      for (float& v : B) v = d(rng);
      const cuda::ColMajorGemm g = cuda::to_col_major_batched(ta, tb, M, N, K, A.data(), lda, a_cols, B.data(), ldb,
                                                              b_cols, ldc, stride_c, H);
      EXPECT_EQ(g.batch, H);
      EXPECT_EQ(g.stride_first, b_cols);
      EXPECT_EQ(g.stride_second, a_cols);
      EXPECT_EQ(g.stride_out, stride_c);
      std::vector<float> want(size_t(H * stride_c)), got(size_t(H * stride_c));
      for (int64_t h = 0; h < H; ++h) {
        gemm(ta, tb, M, N, K, 1.f, A.data() + h * a_cols, lda, B.data() + h * b_cols, ldb, 0.f,
             want.data() + h * stride_c, ldc);
        col_major_gemm(g, B.data() + h * g.stride_first, A.data() + h * g.stride_second,
                       got.data() + h * g.stride_out);
      }
      for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "ta " << ta << " tb " << tb;
    }
}

TEST(CudaAttention, HeadsPerChunkKeepTheScoresWithinTheScratch) {
  EXPECT_EQ(cuda::attention_heads_per_chunk(3, 70), 3);
  // 4096^2 floats are 64 MiB a head: 4 heads in 256 MiB.
  EXPECT_EQ(cuda::attention_heads_per_chunk(128, 4096), 4);
  EXPECT_EQ(cuda::attention_heads_per_chunk(128, 1 << 15), 1);  // more than the scratch: still one head
}
