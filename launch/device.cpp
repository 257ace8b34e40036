#include "launch/device.h"

#include "framework/error.h"

#ifdef MOE_HAVE_CUDA
#include "framework/cuda/allocator.h"
#include "framework/cuda/backend.h"
#include "framework/cuda/device.h"
#endif

namespace moe {

DeviceChoice choose_device(const Config& cfg, int world_size) {
  return choose_device(cfg.device, cfg.source, world_size);
}

DeviceChoice choose_device(const std::string& device, const std::string& where, int world_size) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw error(where, ": device '", device, "' (expected auto, cpu or cuda)");
  DeviceChoice cpu{&cpu_backend(), "cpu", 0};
  if (device == "cpu") return cpu;
#ifdef MOE_HAVE_CUDA
  std::string why;
  const bool gpu = cuda::available(&why);
  if (device == "auto") {
    if (!gpu) return cpu;
    if (world_size > 1) {
      cpu.description = "cpu (device auto: multi-process GPU training is not built yet)";
      return cpu;
    }
  } else {
    if (!gpu) throw error(where, ": device cuda: no usable GPU (", why, ")");
    if (world_size > 1)
      throw error(where, ": device cuda with ", world_size,
                  " processes: multi-GPU training (FSDP and expert parallelism over NCCL) is not built yet "
                  "(expected one process, or device: cpu)");
  }
  return {&cuda::backend(), "cuda: " + cuda::device_name(), 989e12};
#else
  (void)world_size;
  if (device == "cuda")
    throw error(where, ": device cuda: this build has no CUDA backend (nvcc was not found when it was "
                "configured; expected device: cpu or auto, see docs/cuda.md)");
  return cpu;
#endif
}

double device_peak_mib(const DeviceChoice& d) {
#ifdef MOE_HAVE_CUDA
  if (d.backend->device() == Device::CUDA)
    return double(cuda::device_allocator().stats().peak_reserved) / 1048576.0;
#endif
  (void)d;
  return 0;
}

}  // namespace moe
