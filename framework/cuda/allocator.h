// Device memory: the caching allocator (framework/caching_allocator.h) over cudaMalloc/cudaFree,
// one per device, and an RAII buffer on it. Freed blocks are reused at once, which is correct
// while the backend runs all its work on one stream (docs/cuda.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime_api.h>

#include "framework/caching_allocator.h"
#include "framework/cuda/check.h"

namespace moe::cuda {

// The allocator of the current device (cudaGetDevice). Never destroyed: blocks may be freed from
// static destructors after the CUDA runtime has shut down.
CachingAllocator& device_allocator();

// n elements of T in device memory from device_allocator(); uninitialised.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n)
      : n_(n), p_(static_cast<T*>(device_allocator().allocate(size_t(n) * sizeof(T)))), owner_(&device_allocator()) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(n_, o.n_);
      std::swap(p_, o.p_);
      std::swap(owner_, o.owner_);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  int64_t size() const { return n_; }
  void reset() {
    if (owner_) owner_->free(p_);
    p_ = nullptr;
    n_ = 0;
    owner_ = nullptr;
  }
  // Synchronous copies of the whole buffer from/to host memory of size() elements.
  void upload(const T* host) { MOE_CUDA_CHECK(cudaMemcpy(p_, host, bytes(), cudaMemcpyHostToDevice)); }
  void download(T* host) const { MOE_CUDA_CHECK(cudaMemcpy(host, p_, bytes(), cudaMemcpyDeviceToHost)); }
  void zero(cudaStream_t stream = nullptr) { MOE_CUDA_CHECK(cudaMemsetAsync(p_, 0, bytes(), stream)); }

 private:
  size_t bytes() const { return size_t(n_) * sizeof(T); }
  int64_t n_ = 0;
  T* p_ = nullptr;
  CachingAllocator* owner_ = nullptr;
};

}  // namespace moe::cuda
