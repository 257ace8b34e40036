// Which CUDA devices this process sees. Without a GPU (or without a driver) these report no
// device and say why; they never throw, so callers can skip GPU work cleanly.
#pragma once
#include <string>

namespace moe::cuda {

// Number of usable devices; 0 when there is none, the driver is missing or too old. `why` (when
// not null) gets the runtime's reason for 0.
int device_count(std::string* why = nullptr);
// device_count() > 0.
bool available(std::string* why = nullptr);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for the current device.
std::string device_name();
// Waits for all work on the current device; throws CudaError on a fault of an earlier kernel.
void synchronize();

}  // namespace moe::cuda
