// Checked calls into CUDA and its libraries. Every call of the runtime, cuBLAS/cuBLASLt and cuDNN
// goes through one of these macros; a failure throws moe::cuda::CudaError with
//   <file>:<line>: <the call> failed: <status name> (<the library's own error string>)
// (a moe::Error: the CLI prints it as one line and exits 2, like any other error the user can act
// on, e.g. out of device memory). Kernel launches are checked with MOE_CUDA_CHECK_LAUNCH().
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#if defined(MOE_HAVE_CUDNN)
#include <cudnn.h>
#endif

#include "framework/error.h"

namespace moe::cuda {

struct CudaError : ::moe::Error {
  using ::moe::Error::Error;
};

// The message for a failed call (exposed for tests); the throw_* functions throw it.
std::string error_message(cudaError_t status, const char* call, const char* file, int line);
std::string error_message(cublasStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_error(cublasStatus_t status, const char* call, const char* file, int line);
#if defined(MOE_HAVE_CUDNN)
std::string error_message(cudnnStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_error(cudnnStatus_t status, const char* call, const char* file, int line);
#endif

}  // namespace moe::cuda

#define MOE_CUDA_CHECK(call)                                                               \
  do {                                                                                     \
    const cudaError_t moe_status_ = (call);                                                \
    if (moe_status_ != cudaSuccess) ::moe::cuda::throw_error(moe_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define MOE_CUBLAS_CHECK(call)                                                             \
  do {                                                                                     \
    const cublasStatus_t moe_status_ = (call);                                             \
    if (moe_status_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::moe::cuda::throw_error(moe_status_, #call, __FILE__, __LINE__);                    \
  } while (0)

#if defined(MOE_HAVE_CUDNN)
#define MOE_CUDNN_CHECK(call)                                                              \
  do {                                                                                     \
    const cudnnStatus_t moe_status_ = (call);                                              \
    if (moe_status_ != CUDNN_STATUS_SUCCESS)                                               \
      ::moe::cuda::throw_error(moe_status_, #call, __FILE__, __LINE__);                    \
  } while (0)
#endif

// After a kernel launch: a bad configuration shows up here, a fault inside the kernel at the next
// synchronising call.
#define MOE_CUDA_CHECK_LAUNCH() MOE_CUDA_CHECK(cudaGetLastError())
