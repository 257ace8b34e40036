#include "launch/device.h"

#include "framework/error.h"

#ifdef MOE_HAVE_CUDA
#include "framework/cuda/allocator.h"
#include "framework/cuda/backend.h"
#include "framework/cuda/device.h"
#endif

namespace moe {

DeviceChoice choose_device(const Config& cfg, int world_size) {
  DeviceChoice cpu{&cpu_backend(), "cpu", 0};
  if (cfg.device == "cpu") return cpu;
#ifdef MOE_HAVE_CUDA
  std::string why;
  const bool gpu = cuda::available(&why);
  if (cfg.device == "auto") {
    if (!gpu) return cpu;
    if (world_size > 1) {
      cpu.description = "cpu (device auto: multi-process GPU training is not built yet)";
      return cpu;
    }
  } else {
    if (!gpu) throw error(cfg.source, ": device cuda: no usable GPU (", why, ")");
    if (world_size > 1)
      throw error(cfg.source, ": device cuda with ", world_size,
                  " processes: multi-GPU training (FSDP and expert parallelism over NCCL) is not built yet "
                  "(expected one process, or device: cpu)");
  }
  return {&cuda::backend(), "cuda: " + cuda::device_name(), 989e12};
#else
  (void)world_size;
  if (cfg.device == "cuda")
    throw error(cfg.source, ": device cuda: this build has no CUDA backend (nvcc was not found when it was "
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
