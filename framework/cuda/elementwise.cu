// The element-wise ops of framework/backend_ops.inc on the GPU, generated from their entries: one
// thread per element (launch_elements), running the same BODY as the CPU op (framework/ops.cpp).
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/activation.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/moves.h"

namespace moe::cuda {

#define MOE_OP(ret, name, params, args, device)
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) \
  void name MOE_WITH_STREAM params { launch_elements(n, [=] __device__(int64_t i) { __VA_ARGS__; }, stream); }
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

}  // namespace moe::cuda
