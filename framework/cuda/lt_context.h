// The calling thread's cuBLASLt handle and workspace on the current device. gemm.cpp owns them
// (created on first use, per thread and device); the FP8 GEMMs (fp8_gemm.cpp) share them.
#pragma once
#include <cublasLt.h>

#include <cstddef>

namespace moe::cuda {

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int device = -1;
};
LtContext lt_context();

}  // namespace moe::cuda
