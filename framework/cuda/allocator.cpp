#include "framework/cuda/allocator.h"

#include <memory>
#include <mutex>
#include <vector>

namespace moe::cuda {

CachingAllocator& device_allocator() {
  static std::mutex mu;
  static auto* per_device = new std::vector<std::unique_ptr<CachingAllocator>>();
  int dev = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (per_device->size() <= size_t(dev)) per_device->resize(size_t(dev) + 1);
  auto& a = (*per_device)[size_t(dev)];
  if (!a) {
    CachingAllocator::Raw raw;
    raw.alloc = [dev](size_t bytes) -> void* {
      void* p = nullptr;
      int cur = 0;
      MOE_CUDA_CHECK(cudaGetDevice(&cur));
      if (cur != dev) MOE_CUDA_CHECK(cudaSetDevice(dev));
      const cudaError_t status = cudaMalloc(&p, bytes);
      if (cur != dev) MOE_CUDA_CHECK(cudaSetDevice(cur));
      if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // out of memory is not sticky: clear it and let the cache retry
        return nullptr;
      }
      if (status != cudaSuccess) throw_error(status, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
      return p;
    };
    // cudaFree synchronises the device; the cache calls it only when releasing.
    raw.free = [](void* p) { MOE_CUDA_CHECK(cudaFree(p)); };
    raw.name = detail::concat("device ", dev);
    a = std::make_unique<CachingAllocator>(std::move(raw));
  }
  return *a;
}

}  // namespace moe::cuda
