// AdamW on the GPU: kern::adamw_update (framework/kernels/adamw.h), one thread per element.
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/adamw.h"

namespace moe::cuda {

void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s,
                  cudaStream_t stream) {
  const kern::AdamWStep st = s;
  launch_elements(n, [=] __device__(int64_t i) { kern::adamw_update(w + i, m + i, v + i, g[i], st); }, stream);
}

}  // namespace moe::cuda
