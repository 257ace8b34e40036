#include "framework/cuda/device.h"

#include <cuda_runtime_api.h>

#include "framework/cuda/check.h"

namespace moe::cuda {

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    if (why) *why = detail::concat(cudaGetErrorName(status), ": ", cudaGetErrorString(status));
    cudaGetLastError();  // clear it, so that a later MOE_CUDA_CHECK_LAUNCH does not report it
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}

bool available(std::string* why) { return device_count(why) > 0; }

std::string device_name() {
  int dev = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return detail::concat(p.name, " (sm_", p.major, p.minor, ", ", double(p.totalGlobalMem) / double(1 << 30),
                        " GiB)");
}

void synchronize() { MOE_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace moe::cuda
