// Row moves, the embedding's backward and f64 sums on the GPU: kernels/moves.h through the
// launchers (launch.cuh). Each output element has one writer that reads in a fixed order, so all of
// these give the same bits on every run.
#include <vector>

#include "framework/cuda/allocator.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/moves.h"

namespace moe::cuda {

void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
               int64_t src_repeat, cudaStream_t stream) {
  if (cols <= 0) return;
  launch_elements(rows * cols, [=] __device__(int64_t i) {
    kern::copy_rows_element(dst, ld_dst, src, ld_src, src_repeat, i / cols, i % cols);
  }, stream);
}

void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                    int64_t group, cudaStream_t stream) {
  if (cols <= 0) return;
  launch_elements(rows * cols, [=] __device__(int64_t i) {
    kern::sum_row_groups_element(dst, ld_dst, src, ld_src, group, i / cols, i % cols);
  }, stream);
}

void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D,
                        cudaStream_t stream) {
  // D threads, each walking all N tokens: adjacent threads read adjacent columns (coalesced).
  // Parallel over D only; a sort of the ids by value would add parallelism over the vocabulary.
  if (N <= 0) return;
  launch_elements(D, [=] __device__(int64_t d) { kern::embedding_backward_columns(dtable, ids, dout, N, D, d, d + 1); },
                  stream);
}

double sum_f64(const float* x, int64_t n, bool squares, cudaStream_t stream) {
  if (n <= 0) return 0.0;
  DeviceBuffer<double> partial(kSumSegments);
  double* part = partial.get();
  // A fixed block width and segment count: the order of the additions is a function of n alone.
  launch_segments(n, kSumSegments, kSumThreads, 0, [=] __device__(BlockRow & r, int64_t s, int64_t i0, int64_t i1) {
    const double v = kern::sum_span_f64(r, x, i0, i1, squares);
    if (r.leader()) part[s] = v;
  }, stream);
  std::vector<double> host(static_cast<size_t>(kSumSegments));
  MOE_CUDA_CHECK(cudaMemcpyAsync(host.data(), part, sizeof(double) * size_t(kSumSegments), cudaMemcpyDeviceToHost,
                                 stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  double s = 0;
  for (double v : host) s += v;
  return s;
}

double sum_squares_segments_f64(const float* x, const int64_t* begin, const int64_t* length, int64_t count,
                                cudaStream_t stream) {
  if (count <= 0) return 0.0;
  DeviceBuffer<double> partial(count * kSumSegments);
  for (int64_t i = 0; i < count; ++i) {
    double* part = partial.get() + i * kSumSegments;
    const float* xs = x + begin[i];
    if (length[i] <= 0) {
      MOE_CUDA_CHECK(cudaMemsetAsync(part, 0, sizeof(double) * size_t(kSumSegments), stream));
      continue;
    }
    launch_segments(length[i], kSumSegments, kSumThreads, 0, [=] __device__(BlockRow & r, int64_t s, int64_t i0, int64_t i1) {
      const double v = kern::sum_span_f64(r, xs, i0, i1, true);
      if (r.leader()) part[s] = v;
    }, stream);
  }
  std::vector<double> host(static_cast<size_t>(count * kSumSegments));
  MOE_CUDA_CHECK(cudaMemcpyAsync(host.data(), partial.get(), sizeof(double) * host.size(), cudaMemcpyDeviceToHost,
                                 stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  double total = 0;
  for (int64_t i = 0; i < count; ++i) {
    double seg = 0;  // as sum_f64 adds one segment's partials
    for (int64_t j = 0; j < kSumSegments; ++j) seg += host[size_t(i * kSumSegments + j)];
    total += seg;
  }
  return total;
}

}  // namespace moe::cuda
