// framework/gemm.h against a naive double-precision product: every transpose combination, strided
// operands, alpha/beta, on both sides of the skinny-row path (M <= 4 runs our own row kernels,
// larger M runs OpenBLAS). Also: a skinny row's result does not depend on the rows beside it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/gemm.h"
#include "tests/unit/test_random.h"

using namespace moe;

namespace {

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

// C = alpha * op(A) op(B) + beta * C in double, with the same storage conventions as gemm.
std::vector<double> naive(const Case& c, const std::vector<float>& A, int64_t lda, const std::vector<float>& B,
                          int64_t ldb, const std::vector<float>& C, int64_t ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = c.ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)];
        const double b = c.tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
        s += a * b;
      }
      const double old = C[size_t(i * ldc + j)];
      out[size_t(i * ldc + j)] = c.alpha * s + (c.beta == 0.f ? 0.0 : c.beta * old);
    }
  return out;
}

void check(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "ta " << c.ta << " tb " << c.tb << " M " << c.M << " N " << c.N << " K "
                                    << c.K << " alpha " << c.alpha << " beta " << c.beta);
  // Row strides wider than the rows, so an op that ignores them reads the wrong numbers.
  const int64_t lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 5, ldc = c.N + 2;
  const auto A = test::randn(size_t((c.ta ? c.K : c.M) * lda), 1);
  const auto B = test::randn(size_t((c.tb ? c.N : c.K) * ldb), 2);
  auto C = test::randn(size_t(c.M * ldc), 3);
  if (c.beta == 0.f)  // beta 0 must not read C: NaN there must not leak into the result
    for (int64_t i = 0; i < c.M; ++i) C[size_t(i * ldc)] = NAN;
  const auto want = naive(c, A, lda, B, ldb, C, ldc);
  const auto before = C;
  gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      const size_t at = size_t(i * ldc + j);
      ASSERT_NEAR(C[at], want[at], 1e-4 * (1.0 + std::fabs(want[at]))) << "at row " << i << " col " << j;
    }
  for (int64_t i = 0; i < c.M; ++i)  // the padding after each row of C stays untouched
    for (int64_t j = c.N; j < ldc; ++j) ASSERT_EQ(C[size_t(i * ldc + j)], before[size_t(i * ldc + j)]);
}

}  // namespace

TEST(Gemm, AllTransposesSkinnyAndWide) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : {1, 2, 4, 5, 33})
        for (int64_t K : {1, 15, 16, 17, 192})
          for (float beta : {0.f, 1.f, 0.5f}) check({ta, tb, M, 37, K, 0.75f, beta});
}

TEST(Gemm, SkinnyRowDoesNotDependOnItsNeighbours) {
  // One token decoded alone or beside three others gets the same bits (M 1 and 4, K not a multiple
  // of the lane count).
  const int64_t N = 29, K = 70;
  const auto A = test::randn(size_t(4 * K), 4), W = test::randn(size_t(N * K), 5);
  for (bool tb : {false, true}) {
    std::vector<float> alone(static_cast<size_t>(N)), batch(static_cast<size_t>(4 * N));
    const int64_t ldb = tb ? K : N;
    gemm(false, tb, 1, N, K, 1.f, A.data() + 2 * K, K, W.data(), ldb, 0.f, alone.data(), N);
    gemm(false, tb, 4, N, K, 1.f, A.data(), K, W.data(), ldb, 0.f, batch.data(), N);
    EXPECT_EQ(alone, std::vector<float>(batch.begin() + 2 * N, batch.begin() + 3 * N)) << "tb " << tb;
  }
}

TEST(Gemm, ZeroSizesLeaveOrScaleC) {
  std::vector<float> C = {1.f, 2.f, 3.f, 4.f};
  gemm(false, true, 2, 2, 0, 1.f, nullptr, 1, nullptr, 1, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1.f, 1.5f, 2.f}));
  gemm(false, true, 0, 2, 3, 1.f, nullptr, 3, nullptr, 3, 0.f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1.f, 1.5f, 2.f}));
}
