// Single-source kernels: element and row math is written once as MOE_HD functions; the CPU backend
// runs them through the thread pool, the CUDA backend through generic launchers.
#pragma once
#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif
