#include "launch/device.h"

#include "framework/bf16_gemm.h"
#include "framework/error.h"
#include "parallel/node.h"

#ifdef MOE_HAVE_CUDA
#include "framework/cuda/allocator.h"
#include "framework/cuda/backend.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/device.h"
#endif
#ifdef MOE_HAVE_NCCL
#include "parallel/nccl_group.h"
#endif

namespace moe {
#ifdef MOE_HAVE_CUDA
namespace {
#ifdef MOE_HAVE_NCCL
constexpr bool kNcclBuilt = true;
#else
constexpr bool kNcclBuilt = false;
#endif
}  // namespace
#endif

DeviceChoice choose_device(const Config& cfg, const Comm* comm) { return choose_device(cfg.device, cfg.source, comm); }

DeviceChoice choose_device(const std::string& device, const std::string& where, const Comm* comm) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw error(where, ": device '", device, "' (expected auto, cpu or cuda)");
  DeviceChoice cpu{&cpu_backend(), &MpiGroup::make, "cpu", 0};
  if (device == "cpu") return cpu;
  const int world = comm ? comm->size() : 1;
#ifdef MOE_HAVE_CUDA
  std::string why;
  const int gpus = cuda::device_count(&why);
  // Ranks on this node (collective when the world has several), each needing a GPU of its own.
  int local_ranks = 1;
  if (world > 1) local_rank(*comm, &local_ranks);
  std::string problem;
  if (gpus == 0)
    problem = "no usable GPU (" + why + ")";
  else if (world > 1 && !kNcclBuilt)
    problem = "multi-GPU training needs NCCL, which this build does not have (" + std::to_string(world) +
              " processes; expected one, or device: cpu)";
  else if (local_ranks > gpus)
    problem = std::to_string(local_ranks) + " ranks on this node but " + std::to_string(gpus) +
              " GPU(s): NCCL needs one GPU per rank (expected at most " + std::to_string(gpus) + " ranks per node)";
  if (world > 1) {  // every rank on the same device kind, or none
    double bad = problem.empty() ? 0 : 1;
    comm->allreduce_sum(&bad, 1);
    if (bad > 0 && problem.empty()) problem = "another rank of the job cannot have a GPU of its own";
  }
  if (!problem.empty()) {
    if (device == "cuda") throw error(where, ": device cuda: ", problem);
    if (gpus > 0) cpu.description = "cpu (device auto: " + problem + ")";
    return cpu;
  }
  DeviceChoice gpu{&cuda::backend(), &MpiGroup::make, "", 989e12};
#ifdef MOE_HAVE_NCCL
  if (world > 1) {
    nccl::select_device(*comm);  // before anything is allocated on a GPU
    gpu.groups = &NcclGroup::make;
  }
#endif
  gpu.description = "cuda: " + cuda::device_name() + (world > 1 ? " (one per rank, NCCL)" : "");
  return gpu;
#else
  (void)world;
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

std::string attention_label(const DeviceChoice& d) {
#ifdef MOE_HAVE_CUDA
  if (d.backend->device() == Device::CUDA) {
    if (const int64_t runs = cuda::cudnn_attention_runs(); runs > 0)
      return "cudnn fused (" + std::to_string(runs) + " passes)";
#ifdef MOE_HAVE_CUDNN
    return cuda::cudnn_attention_enabled() ? "gemm (fused attention not taken)" : "gemm (MOE_CUDNN_ATTENTION=0)";
#else
    return "gemm (built without cuDNN)";
#endif
  }
#endif
  (void)d;
  return "cpu core";
}

std::string precision_label(Precision p, const DeviceChoice& d) {
  const bool cpu = d.description.rfind("cpu", 0) == 0;
  if (p != Precision::BF16 || !cpu) return precision_name(p);
  return std::string("bf16 (") + bf16_gemm_backend() + ")";
}

}  // namespace moe
