// Shared by the gpu tests: a fixture that skips without a GPU (saying why), host <-> device copies,
// and a comparison with a per-op tolerance. Each test runs a CUDA op and the CPU op on the same
// inputs and compares; the CPU op is the reference (tests/unit test it).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "framework/cuda/allocator.h"
#include "framework/cuda/check.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/device.h"
#include "tests/unit/test_random.h"

namespace moe::gpu_test {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::available(&why)) GTEST_SKIP() << "no CUDA device (" << why << "); run on a GPU machine with ctest -L gpu";
  }
  void TearDown() override {
    if (cuda::available()) cuda::synchronize();  // a fault inside a kernel fails this test, not the next
  }
};

// cuDNN's fused attention switched off while it lives: for tests that compare the GEMM path's
// attention with the CPU bit for bit or to f32 round-off (test_gpu_fused_attention compares the two
// paths).
class FusedAttentionOff {
 public:
  FusedAttentionOff() : was_(cuda::cudnn_attention_enabled()) { cuda::set_cudnn_attention(false); }
  ~FusedAttentionOff() { cuda::set_cudnn_attention(was_); }
  FusedAttentionOff(const FusedAttentionOff&) = delete;
  FusedAttentionOff& operator=(const FusedAttentionOff&) = delete;

 private:
  bool was_;
};

template <class T>
cuda::DeviceBuffer<T> to_device(const std::vector<T>& v) {
  cuda::DeviceBuffer<T> d(int64_t(v.size()));
  d.upload(v.data());
  return d;
}

template <class T>
std::vector<T> to_host(const cuda::DeviceBuffer<T>& d) {
  std::vector<T> v(size_t(d.size()));
  d.download(v.data());
  return v;
}

// Whether the GPU is a Hopper (sm_90): the only one that takes the FP8 GEMM path (fp8_gemm.cpp).
inline bool is_hopper() {
  int dev = 0, major = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major == 9;
}

// Mean milliseconds of f() over `iters` runs after 3 untimed ones, timed with CUDA events on the
// default stream: for the benchmark prints, never asserted.
template <class F>
double mean_ms(F f, int iters = 20) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t t0, t1;
  MOE_CUDA_CHECK(cudaEventCreate(&t0));
  MOE_CUDA_CHECK(cudaEventCreate(&t1));
  MOE_CUDA_CHECK(cudaEventRecord(t0));
  for (int i = 0; i < iters; ++i) f();
  MOE_CUDA_CHECK(cudaEventRecord(t1));
  MOE_CUDA_CHECK(cudaEventSynchronize(t1));
  float ms = 0;
  MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
  MOE_CUDA_CHECK(cudaEventDestroy(t0));
  MOE_CUDA_CHECK(cudaEventDestroy(t1));
  return double(ms) / iters;
}

using test::randn;  // the unit tests' random inputs (tests/unit/test_random.h)

// Normalised error (ggml's test-backend-ops style): max |got - want| / max(max |want|, floor) <= tol.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what,
                         double floor = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = floor, err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, double(std::abs(want[i])));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::abs(double(got[i]) - double(want[i]));
    if (!(e <= err)) err = e, worst = i;  // NaN counts as worst
  }
  EXPECT_LE(err / scale, tol) << what << ": worst at " << worst << ": got " << got[worst] << ", want " << want[worst];
}

}  // namespace moe::gpu_test
