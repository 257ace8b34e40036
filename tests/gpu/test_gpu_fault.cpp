// A fault inside a kernel surfaces as a CudaError that names the failing call. Its own process:
// after an illegal address the CUDA context is unusable, so nothing may run after this test.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "framework/cuda/check.h"
#include "framework/cuda/device.h"
#include "framework/cuda/ops.h"

using namespace moe;

TEST(GpuFault, IllegalAddressIsReportedWithTheCall) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << "no CUDA device (" << why << "); run on a GPU machine with ctest -L gpu";
  float* bogus = reinterpret_cast<float*>(uintptr_t(16));
  cuda::swiglu_forward(bogus, bogus, bogus, 1 << 20);  // the launch itself is fine
  try {
    cuda::synchronize();
    FAIL() << "expected an illegal address";
  } catch (const cuda::CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("cudaDeviceSynchronize() failed: cudaErrorIllegalAddress"), std::string::npos)
        << e.what();
  }
}
