// Which backend a command computes on (config key `device`, framework/backend.h), and the
// collective groups its distributed training uses (parallel/group.h):
//   cpu   the CPU backend (threads: train.threads); collectives over MPI
//   cuda  this build's CUDA backend, one GPU per rank (the local rank picks it); with more than
//         one rank, collectives over NCCL (needs a build with NCCL and a GPU per rank on each node)
//   auto  cuda when this build can and every rank on this node has a GPU of its own; else the CPU
//         (the choice is printed)
// An impossible request is a moe::Error naming where the device was asked for.
#pragma once
#include <string>

#include "framework/backend.h"
#include "framework/config.h"
#include "parallel/comm.h"
#include "parallel/group.h"

namespace moe {

struct DeviceChoice {
  Backend* backend = nullptr;
  GroupFactory groups = &MpiGroup::make;
  std::string description;  // "cuda: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" or "cpu"
  double peak_flops = 0;    // the MFU denominator: 989e12 on a GPU (H100 dense bf16, as torch_ref.py); 0 on the CPU (measured)
};

// comm: the job's world (collective over it when it has more than one rank); null for a
// single-process command.
DeviceChoice choose_device(const Config& cfg, const Comm* comm);
// The same for a device named elsewhere (a command-line flag): `where` prefixes the errors.
DeviceChoice choose_device(const std::string& device, const std::string& where, const Comm* comm);
// The precision as run headers print it: on the CPU at bf16 with the GEMM that runs it, e.g.
// "bf16 (onednn 2.6.3 avx512_core_bf16)" or "bf16 (emulated (this CPU has no AVX512-BF16))".
std::string precision_label(Precision p, const DeviceChoice& d);

// Which attention core has run, for benchmarks: "cpu core" on the CPU; on a GPU "cudnn fused (N
// passes)" once cuDNN's fused attention ran (docs/cuda.md, "Fused attention (cuDNN)"), else "gemm"
// with why (switched off, built without cuDNN, or not taken: not bf16, declined, or disagreeing;
// the reason is on stderr).
std::string attention_label(const DeviceChoice& d);

// Peak device memory (MiB) the backend's allocator has reserved; 0 on the CPU (see peak_rss_mib).
double device_peak_mib(const DeviceChoice& d);

}  // namespace moe
