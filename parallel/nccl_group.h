// NcclGroup: the CollectiveGroup (parallel/group.h) of GPU buffers, over an NcclComm made from an
// MPI Comm (parallel/nccl_comm.h: its own stream, one GPU per rank). A Pending's wait() makes the
// legacy default stream, where the CUDA backend runs every op, wait for the collective: the host
// does not block, and everything queued after it sees the result. Built with moe_nccl only.
#pragma once
#include <memory>

#include "parallel/group.h"
#include "parallel/nccl_comm.h"

namespace moe {

class NcclGroup final : public CollectiveGroup {
 public:
  // Collective over comm; selects this rank's GPU first (nccl::select_device).
  explicit NcclGroup(const Comm& comm) : comm_(comm), nccl_(comm) {}
  const Comm& comm() const override { return comm_; }
  Pending iallgather(const float* send, float* recv, int64_t n) const override;
  Pending ireduce_scatter_sum(const float* send, float* recv, int64_t n) const override;
  void allreduce_sum(float* data, int64_t n) const override { nccl_.allreduce_sum(data, n); }
  void alltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                 Counts recv_displs) const override {
    nccl_.alltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs);
  }
  static std::unique_ptr<CollectiveGroup> make(const Comm& comm) { return std::make_unique<NcclGroup>(comm); }

 private:
  const Comm& comm_;
  NcclComm nccl_;
};

}  // namespace moe
