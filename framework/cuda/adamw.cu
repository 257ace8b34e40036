// AdamW on the GPU: kern::adamw_update (framework/kernels/adamw.h), one thread per element.
#include <vector>

#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/adamw.h"

namespace moe::cuda {

void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s,
                  cudaStream_t stream) {
  const kern::AdamWStep st = s;
  launch_elements(n, [=] __device__(int64_t i) { kern::adamw_update(w + i, m + i, v + i, g[i], st); }, stream);
}

// One launch over the segments laid end to end: thread i finds its segment by binary search over
// their starts (kern::segment_of), then updates element begin + (i - start) with the segment's decay.
void adamw_update_segments(float* w, float* m, float* v, const float* g, const kern::AdamWSegment* segs,
                           int64_t count, const kern::AdamWStep& s, cudaStream_t stream) {
  if (count <= 0) return;
  // [start[count + 1], begin[count], decay[count]] in one upload.
  std::vector<int64_t> table(size_t(3 * count + 1));
  int64_t* start = table.data();
  for (int64_t i = 0; i < count; ++i) {
    start[i + 1] = start[i] + segs[i].n;
    table[size_t(count + 1 + i)] = segs[i].begin;
    table[size_t(2 * count + 1 + i)] = segs[i].decay;
  }
  const int64_t total = start[count];
  if (total == 0) return;
  // cudaMemcpyAsync from pageable memory has read the host table when it returns; the device copy
  // is freed after the launch is queued (the one-stream rule of the caching allocator).
  DeviceBuffer<int64_t> dev(int64_t(table.size()));
  MOE_CUDA_CHECK(cudaMemcpyAsync(dev.get(), table.data(), table.size() * sizeof(int64_t), cudaMemcpyHostToDevice,
                                 stream));
  const int64_t *d_start = dev.get(), *d_begin = d_start + count + 1, *d_decay = d_begin + count;
  const kern::AdamWStep st = s;
  launch_elements(total, [=] __device__(int64_t i) {
    const int64_t seg = kern::segment_of(d_start, count, i);
    const int64_t j = d_begin[seg] + (i - d_start[seg]);
    kern::AdamWStep e = st;
    if (!d_decay[seg]) e.decay = 1.f;
    kern::adamw_update(w + j, m + j, v + j, g[j], e);
  }, stream);
}

}  // namespace moe::cuda
