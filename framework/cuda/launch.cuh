// CUDA launchers: run single-source kernels (framework/kernels/) on the GPU. They mirror the CPU
// launchers (framework/launch.h) one for one; an op passes a __device__ lambda:
//   launch_elements(n, f, stream)                      f(i), one thread per i (grid-stride)
//   launch_rows(rows, threads, smem, f, stream)        f(r, row), one block per row, r a BlockRow
//   launch_segments(rows, S, threads, smem, f, stream) rows cut into S contiguous runs, one block
//                                                      per run: f(r, s, begin, end)
// `threads` is a multiple of 32 (whole warps: the reductions shuffle over full warps); `smem` is
// the bytes of dynamic shared memory a row function gets from r.shared().
// Only this file and the op files (*.cu) are GPU-only; the math they run is tested on the CPU.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "framework/cuda/check.h"
#include "framework/error.h"

namespace moe::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// The row policy of one thread block (framework/kernels/row.h has the contract). Reductions are
// butterfly shuffles within each warp (every lane ends with the same value: IEEE addition is
// commutative), then every thread combines the warps' values in warp order, so the result is the
// same on every thread and in every run for a given block size.
class BlockRow {
 public:
  __device__ BlockRow(void* red, void* dyn) : red_(red), dyn_(dyn) {}
  __device__ int lane() const { return int(threadIdx.x); }
  __device__ int width() const { return int(blockDim.x); }
  __device__ bool leader() const { return threadIdx.x == 0; }
  __device__ void sync() { __syncthreads(); }
  // Dynamic shared memory of the launch (smem bytes).
  __device__ float* shared() const { return static_cast<float*>(dyn_); }

  template <class T>
  __device__ T sum(T v) {
    return reduce(v, [](T a, T b) { return a + b; });
  }
  __device__ float max(float v) {
    return reduce(v, [](float a, float b) { return fmaxf(a, b); });
  }
  __device__ uint32_t max_bits(uint32_t v) {
    return reduce(v, [](uint32_t a, uint32_t b) { return a > b ? a : b; });
  }
  template <class T>
  __device__ T exclusive_scan(T v, T* total) {
    T* buf = static_cast<T*>(red_);
    const int l = int(threadIdx.x) % kWarp, w = int(threadIdx.x) / kWarp, nw = int(blockDim.x) / kWarp;
    T x = v;
    for (int o = 1; o < kWarp; o <<= 1) {
      T y = __shfl_up_sync(kFullMask, x, o);
      if (l >= o) x += y;
    }
    if (l == kWarp - 1) buf[w] = x;
    __syncthreads();
    T before = T(0), all = T(0);
    for (int j = 0; j < nw; ++j) {
      if (j < w) before += buf[j];
      all += buf[j];
    }
    __syncthreads();  // buf is free for the next reduction
    *total = all;
    return before + x - v;
  }

 private:
  template <class T, class Op>
  __device__ T reduce(T v, Op op) {
    T* buf = static_cast<T*>(red_);
    for (int o = kWarp / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
    const int nw = int(blockDim.x) / kWarp;
    if (threadIdx.x % kWarp == 0) buf[threadIdx.x / kWarp] = v;
    __syncthreads();
    T r = buf[0];
    for (int j = 1; j < nw; ++j) r = op(r, buf[j]);
    __syncthreads();
    return r;
  }

  void* red_;  // 32 slots of up to 8 bytes: one per warp
  void* dyn_;
};

namespace detail {

// Grids are capped; every kernel loops (grid-stride), so any size is covered.
constexpr int64_t kMaxBlocks = 1 << 16;

inline unsigned grid_for(int64_t items) { return unsigned(items < kMaxBlocks ? items : kMaxBlocks); }

// Dynamic shared memory beyond 48 KiB needs an opt-in per kernel (cudaFuncSetAttribute); no op
// asks for that much.
constexpr size_t kMaxDynamicSmem = size_t(48) << 10;

inline void check_block(int threads, size_t smem) {
  MOE_CHECK(threads >= kWarp && threads <= 1024 && threads % kWarp == 0, "block of ", threads,
            " threads (expected whole warps, at most 1024)");
  MOE_CHECK(smem <= kMaxDynamicSmem, smem, " bytes of dynamic shared memory (at most ", kMaxDynamicSmem, ")");
}

template <class F>
__global__ void elements_kernel(int64_t n, F f) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    f(i);
}

// Dynamic shared memory, the same symbol for every kernel.
extern __shared__ float4 moe_dynamic_smem[];  // 16-byte aligned

template <class F>
__global__ void rows_kernel(int64_t rows, F f) {
  __shared__ double red[kWarp];
  BlockRow r(red, moe_dynamic_smem);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) f(r, row);
}

template <class F>
__global__ void segments_kernel(int64_t rows, int64_t S, F f) {
  __shared__ double red[kWarp];
  BlockRow r(red, moe_dynamic_smem);
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) f(r, s, rows * s / S, rows * (s + 1) / S);
}

}  // namespace detail

constexpr int kElementThreads = 256;

template <class F>
void launch_elements(int64_t n, F f, cudaStream_t stream) {
  if (n <= 0) return;
  detail::elements_kernel<<<detail::grid_for((n + kElementThreads - 1) / kElementThreads), kElementThreads, 0,
                            stream>>>(n, f);
  MOE_CUDA_CHECK_LAUNCH();
}

template <class F>
void launch_rows(int64_t rows, int threads, size_t smem, F f, cudaStream_t stream) {
  if (rows <= 0) return;
  detail::check_block(threads, smem);
  detail::rows_kernel<<<detail::grid_for(rows), unsigned(threads), smem, stream>>>(rows, f);
  MOE_CUDA_CHECK_LAUNCH();
}

template <class F>
void launch_segments(int64_t rows, int64_t S, int threads, size_t smem, F f, cudaStream_t stream) {
  if (S <= 0) return;
  detail::check_block(threads, smem);
  detail::segments_kernel<<<detail::grid_for(S), unsigned(threads), smem, stream>>>(rows, S, f);
  MOE_CUDA_CHECK_LAUNCH();
}

// Threads for rows of n elements: about 4 elements per thread, whole warps, 32..512.
inline int row_threads(int64_t n) {
  int64_t t = (n + 3) / 4;
  t = (t + kWarp - 1) / kWarp * kWarp;
  return int(t < kWarp ? kWarp : (t > 512 ? 512 : t));
}

}  // namespace moe::cuda
