// Compute backends: every op the model runs over tensors, on the memory of one device. Model code
// calls compute().op(...) (never a CPU function directly) with pointers into tensors that live on
// compute().device(), so the same model code trains on the CPU and on a GPU:
//   - the CPU backend (framework/backend_cpu.cpp) runs the ops of framework/ops.h, moe_ops.h,
//     gemm.h, precision.h and attention.h, i.e. the single-source kernels on the thread pool;
//   - the CUDA backend (framework/cuda/backend.h) runs the same kernels through the CUDA launchers
//     and cuBLASLt, on device memory;
//   - tests add an emulated device (tests/unit/emulated_device.h): the CPU ops over memory the host
//     may not touch outside an op, which proves on any machine that the model never reads device
//     memory from the host and never hands a host pointer to a device op.
// Pointers are device pointers except where a comment says "host". Host-side values the model
// needs (losses, expert counts, router statistics) come back through download() or the ops that
// return a number; each is a synchronisation point on a GPU, so the model keeps them few.
// The compute ops are declared once, in framework/backend_ops.inc; every backend is generated from
// that table.
#pragma once
#include <cstddef>
#include <cstdint>

#include "framework/attention.h"
#include "framework/kernels/adamw.h"
#include "framework/kernels/fp8_rows.h"
#include "framework/kernels/router.h"
#include "framework/precision.h"
#include "framework/tensor.h"

namespace moe {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;

  // ---- memory (bytes) ----
  virtual void* allocate(size_t bytes) = 0;  // 256-byte aligned; throws moe::Error when out of memory
  virtual void deallocate(void* p) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;           // within the device
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;        // host -> device
  virtual void download(void* host, const void* src, size_t bytes) = 0;      // device -> host; waits
  virtual void synchronize() = 0;                                            // all queued work done

  // ---- compute ops: one pure virtual per entry of framework/backend_ops.inc (signatures and
  // what each computes are documented there) ----
#define MOE_OP(ret, name, params, args, device) virtual ret name params = 0;
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) virtual void name params = 0;
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

  // The sum over `count` segments [begin[i], begin[i] + length[i]) of x of sum_squares(segment),
  // added in segment order: the gradient norm over the optimizer's segments. begin and length are
  // host arrays. A device computes all segments before it waits once; the result equals the loop
  // over sum_squares bit for bit.
  virtual double sum_squares_segments(const float* x, const int64_t* begin, const int64_t* length, int64_t count) {
    double s = 0;
    for (int64_t i = 0; i < count; ++i) s += sum_squares(x + begin[i], length[i]);
    return s;
  }
};

// The CPU backend (always there).
Backend& cpu_backend();
// The backend owning memory of `device` (Tensor uses it for device tensors). Device::CUDA has one
// only after register_device_backend (the CUDA backend registers itself when first used; tests
// register the emulated device).
Backend& device_backend(Device device);
void register_device_backend(Backend* b);  // b->device() must not be CPU; null unregisters
// The backend the model computes with: the CPU unless a ComputeScope (or set_compute) says otherwise.
Backend& compute();
void set_compute(Backend* b);  // null: the CPU

// Computes on `b` while alive, then restores the previous backend.
class ComputeScope {
 public:
  explicit ComputeScope(Backend& b) : prev_(&compute()) { set_compute(&b); }
  ~ComputeScope() { set_compute(prev_); }
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  Backend* prev_;
};

}  // namespace moe
