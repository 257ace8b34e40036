// The CUDA backend: framework/backend.h on device memory of the current GPU. Every op runs on the
// default stream (as the CUDA ops and the caching allocator assume), in stream order; only
// download(), sum(), sum_squares() and synchronize() wait for the device.
//   memory            cuda::device_allocator() (caching), cudaMemsetAsync, cudaMemcpy(Async)
//   layers, routing   the CUDA ops (ops.h): the CPU's single-source kernels through launch.cuh
//   gemm, linear      cuBLASLt (gemm.h) at the layer's precision (linear.h)
//   grouped linear    one grouped cuBLAS call per GEMM kind for fp32/bf16, a loop for fp8 (linear.h)
//   attention         strided-batched cuBLASLt GEMMs + causal softmax rows (attention.h)
// docs/cuda.md, "The CUDA backend", lists what each op runs on and its determinism.
#pragma once
#include "framework/backend.h"

namespace moe::cuda {

// The process-wide CUDA backend. The first call creates it and registers it as the backend of
// Device::CUDA memory (register_device_backend), so Tensor::empty(shape, dtype, Device::CUDA)
// works from then on. Never destroyed: device tensors may be freed from static destructors.
Backend& backend();

}  // namespace moe::cuda
