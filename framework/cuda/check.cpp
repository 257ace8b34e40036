#include "framework/cuda/check.h"

namespace moe::cuda {

std::string error_message(cudaError_t status, const char* call, const char* file, int line) {
  return detail::concat(file, ":", line, ": ", call, " failed: ", cudaGetErrorName(status), " (",
                        cudaGetErrorString(status), ")");
}

std::string error_message(cublasStatus_t status, const char* call, const char* file, int line) {
  return detail::concat(file, ":", line, ": ", call, " failed: ", cublasLtGetStatusName(status), " (",
                        cublasLtGetStatusString(status), ")");
}

void throw_error(cudaError_t status, const char* call, const char* file, int line) {
  throw CudaError(error_message(status, call, file, line));
}

void throw_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw CudaError(error_message(status, call, file, line));
}

#if defined(MOE_HAVE_CUDNN)
std::string error_message(cudnnStatus_t status, const char* call, const char* file, int line) {
  return detail::concat(file, ":", line, ": ", call, " failed: ", cudnnGetErrorString(status));
}

void throw_error(cudnnStatus_t status, const char* call, const char* file, int line) {
  throw CudaError(error_message(status, call, file, line));
}
#endif

}  // namespace moe::cuda
