// GEMM throughput of this machine with the threads we use: f32 through gemm.h (OpenBLAS), bf16
// through bf16_gemm.h (AVX512-BF16 where the CPU has it). The CPU's MFU denominator and the figures
// of `moe bench gemm`.
#pragma once
#include <cstdint>

#include "framework/precision.h"

namespace moe {

// GFLOP/s of C[M,N] = op(A) op(B) at `bf16` (else f32), split over the thread pool as training
// splits it; best of `trials` timed runs after one untimed one, each repeated to last >= ~20 ms.
// cold: operands rotate through 64 MiB of copies, read from memory as in a training step.
double gemm_gflops(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int trials = 3, bool cold = false);

// The ceiling training at precision p can reach on this CPU: a 1024^3 GEMM in the precision its
// GEMMs actually run (bf16 on native bf16 instructions; f32 otherwise, fp8 included: the emulation
// multiplies de-quantised f32 values).
double cpu_peak_gflops(Precision p);

}  // namespace moe
