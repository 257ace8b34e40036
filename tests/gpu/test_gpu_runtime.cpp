// The CUDA runtime pieces on a GPU: the device allocator reuses memory across "steps" and turns
// out-of-memory into a clear error, and the cuBLASLt GEMM matches the CPU GEMM for every transpose
// combination, f32 and bf16 inputs, f32 and bf16 outputs. Skips without a GPU.
#include <gtest/gtest.h>

#include "framework/cuda/gemm.h"
#include "framework/cuda/ops.h"
#include "framework/gemm.h"
#include "framework/ops.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

class GpuRuntime : public GpuTest {};

TEST_F(GpuRuntime, DeviceAndAllocator) {
  std::printf("device: %s\n", cuda::device_name().c_str());
  CachingAllocator& a = cuda::device_allocator();
  const int64_t raw_before = a.stats().raw_allocs;
  for (int step = 0; step < 3; ++step) {
    cuda::DeviceBuffer<float> x(1 << 20), y(1 << 10);
    x.zero();
    y.zero();
  }
  EXPECT_LE(a.stats().raw_allocs - raw_before, 2);  // steps 2 and 3 reused step 1's blocks
  // Far more than any GPU has: a clear moe::Error, and the allocator still works afterwards.
  EXPECT_THROW(cuda::DeviceBuffer<float>(int64_t(1) << 42), Error);
  cuda::DeviceBuffer<float> z(100);
  z.zero();
  cuda::synchronize();
}

namespace {

void check_gemm(bool ta, bool tb, DType ab, DType c, double tol) {
  const int64_t M = 300, N = 200, K = 520;
  const int64_t lda = (ta ? M : K) + 8, ldb = (tb ? K : N) + 8, ldc = N + 8;
  auto A = randn(size_t((ta ? K : M) * lda), 1), B = randn(size_t((tb ? N : K) * ldb), 2);
  auto C = randn(size_t(M * ldc), 3);
  if (ab == DType::BF16)  // the CPU reference sees exactly the bf16 values
    for (auto* v : {&A, &B})
      for (float& x : *v) x = kern::round_bf16(x);
  std::vector<float> want = C;
  gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, want.data(), ldc);

  auto A_d = to_device(A), B_d = to_device(B), C_d = to_device(C);
  cuda::DeviceBuffer<uint16_t> Ab(int64_t(A.size())), Bb(int64_t(B.size())), Cb(int64_t(C.size()));
  const void *a = A_d.get(), *b = B_d.get();
  void* out = C_d.get();
  if (ab == DType::BF16) {
    cuda::cast_f32_to_bf16(Ab.get(), A_d.get(), int64_t(A.size()));
    cuda::cast_f32_to_bf16(Bb.get(), B_d.get(), int64_t(B.size()));
    a = Ab.get(), b = Bb.get();
  }
  if (c == DType::BF16) {
    cuda::cast_f32_to_bf16(Cb.get(), C_d.get(), int64_t(C.size()));
    out = Cb.get();
    for (float& x : C) x = kern::round_bf16(x);  // beta * C reads the bf16 C
    want = C;
    gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, want.data(), ldc);
  }
  cuda::gemm(ta, tb, M, N, K, 0.5f, a, lda, b, ldb, 0.25f, out, ldc, ab, c);
  if (c == DType::BF16) cuda::cast_bf16_to_f32(C_d.get(), Cb.get(), int64_t(C.size()));
  std::vector<float> got = to_host(C_d);
  // Only the M x N window is written; the padding columns keep C.
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = N; j < ldc; ++j) got[i * ldc + j] = want[i * ldc + j];
  expect_close(got, want, tol, "gemm");
}

}  // namespace

TEST_F(GpuRuntime, GemmF32) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check_gemm(ta, tb, DType::F32, DType::F32, 1e-5);
}

TEST_F(GpuRuntime, GemmBf16InF32Out) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check_gemm(ta, tb, DType::BF16, DType::F32, 1e-5);
}

TEST_F(GpuRuntime, GemmBf16InBf16Out) { check_gemm(false, true, DType::BF16, DType::BF16, 1e-2); }

// A GEMM on sub-matrices: operands that start one element into their buffers (4-byte aligned, not
// the 256 bytes cuBLASLt's heuristic assumes by default).
TEST_F(GpuRuntime, GemmOnUnalignedSubMatrices) {
  const int64_t M = 64, N = 48, K = 80;
  auto A = randn(size_t(M * K + 1), 4), B = randn(size_t(N * K + 1), 5);
  std::vector<float> C(size_t(M * N + 1), 0.f), want = C;
  gemm(false, true, M, N, K, 1.f, A.data() + 1, K, B.data() + 1, K, 0.f, want.data() + 1, N);
  auto A_d = to_device(A), B_d = to_device(B), C_d = to_device(C);
  cuda::gemm(false, true, M, N, K, 1.f, A_d.get() + 1, K, B_d.get() + 1, K, 0.f, C_d.get() + 1, N);
  expect_close(to_host(C_d), want, 1e-5, "gemm on unaligned operands");
}
