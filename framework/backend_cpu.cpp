// The CPU backend: framework/backend.h over the CPU ops (single-source kernels on the thread pool),
// generated from the op table (backend_ops.inc), and the registry of backends.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "framework/backend.h"
#include "framework/fp8_rows.h"
#include "framework/gemm.h"
#include "framework/grouped_linear.h"
#include "framework/moe_ops.h"
#include "framework/ops.h"

namespace moe {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  const char* name() const override { return "cpu"; }

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void zero(void* p, size_t bytes) override { if (bytes) std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { if (bytes) std::memmove(dst, src, bytes); }
  void upload(void* dst, const void* host, size_t bytes) override { copy(dst, host, bytes); }
  void download(void* host, const void* src, size_t bytes) override { copy(host, src, bytes); }
  void synchronize() override {}

  // Every op of backend_ops.inc is the CPU function of its name (ops.h, moe_ops.h, gemm.h,
  // precision.h, fp8_rows.h, grouped_linear.h, attention.h). The cast drops cross_entropy_forward's
  // mean, which the interface leaves to the caller.
#define MOE_OP(ret, name, params, args, device) \
  ret name params override { return static_cast<ret>(moe::name args); }
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) MOE_OP(void, name, params, args, ())
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP
};

Backend* g_device = nullptr;   // the backend of Device::CUDA memory
Backend* g_compute = nullptr;  // null: the CPU

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

Backend& device_backend(Device device) {
  if (device == Device::CPU) return cpu_backend();
  MOE_CHECK(g_device && g_device->device() == device,
            "no backend for device memory is registered (a CUDA tensor without the CUDA backend)");
  return *g_device;
}

void register_device_backend(Backend* b) {
  MOE_CHECK(!b || b->device() != Device::CPU, "the CPU backend is always registered");
  g_device = b;
}

Backend& compute() { return g_compute ? *g_compute : cpu_backend(); }

void set_compute(Backend* b) { g_compute = b; }

}  // namespace moe
