#include "framework/cuda/backend.h"

#include "framework/cuda/allocator.h"
#include "framework/cuda/attention.h"
#include "framework/cuda/check.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/linear.h"
#include "framework/cuda/ops.h"

namespace moe::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "cuda"; }

  // ---- memory ----
  // The caching allocator hands out whole cudaMalloc blocks (never split): 256-byte aligned.
  void* allocate(size_t bytes) override { return device_allocator().allocate(bytes); }
  void deallocate(void* p) override { device_allocator().free(p); }
  void zero(void* p, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, nullptr));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, nullptr));
  }
  // cudaMemcpy on the legacy default stream runs after all queued work and returns when done: the
  // host buffer may be reused (upload) or read (download) at once.
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
  }
  void synchronize() override { MOE_CUDA_CHECK(cudaDeviceSynchronize()); }

  // Every op of backend_ops.inc is the CUDA function of its name on the default stream (cuda/ops.h,
  // linear.h, gemm.h, attention.h): the same single-source kernels as the CPU op.
#define MOE_OP(ret, name, params, args, device) \
  ret name params override { return cuda::name args; }
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) MOE_OP(void, name, params, args, ())
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

  double sum_squares_segments(const float* x, const int64_t* begin, const int64_t* length, int64_t count) override {
    return sum_squares_segments_f64(x, begin, length, count);
  }
};

}  // namespace

Backend& backend() {
  static Backend* const instance = [] {
    Backend* b = new CudaBackend;  // never deleted (backend.h)
    register_device_backend(b);
    return b;
  }();
  return *instance;
}

}  // namespace moe::cuda
