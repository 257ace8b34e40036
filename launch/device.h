// Which backend a command computes on (config key `device`, framework/backend.h):
//   cpu   the CPU backend (threads: train.threads)
//   cuda  the GPU (this build's CUDA backend, one process per job for now)
//   auto  cuda when this build has the CUDA backend, a GPU is visible and the job is one process;
//         the CPU otherwise (the choice is printed)
// An impossible request (cuda without the backend, without a GPU, or under mpirun with more than
// one process) is a moe::Error naming the config file.
#pragma once
#include <string>

#include "framework/backend.h"
#include "framework/config.h"

namespace moe {

struct DeviceChoice {
  Backend* backend = nullptr;
  std::string description;  // "cuda: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" or "cpu"
  double peak_flops = 0;    // the MFU denominator: 989e12 on a GPU (H100 dense bf16, as torch_ref.py); 0 on the CPU (measured)
};

DeviceChoice choose_device(const Config& cfg, int world_size);
// The same for a device named elsewhere (a command-line flag): `where` prefixes the errors.
DeviceChoice choose_device(const std::string& device, const std::string& where, int world_size);

// Peak device memory (MiB) the backend's allocator has reserved; 0 on the CPU (see peak_rss_mib).
double device_peak_mib(const DeviceChoice& d);

}  // namespace moe
