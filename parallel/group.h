// CollectiveGroup: the collectives FSDP and expert parallelism run on buffers of the compute
// device (framework/backend.h), over the ranks of one MPI Comm:
//   MpiGroup   (here)                  host memory, through the Comm itself (deterministic sums)
//   NcclGroup  (parallel/nccl_group.h)  GPU memory, through an NcclComm on its own stream
// Counts, losses and other host values always go through comm() (MPI).
//
// A Pending collective must be waited for before its buffers are reused or freed, and before
// their contents are read. wait() orders the result before later work: MPI returns when it is
// in memory; NCCL makes the compute stream wait for it (the host does not block), which is
// enough because every op of the CUDA backend runs on that stream.
#pragma once
#include <cstdint>
#include <memory>

#include "parallel/comm.h"

namespace moe {

class PendingCollective {
 public:
  virtual ~PendingCollective() = default;  // waits if nothing did
  virtual void wait() = 0;
};
using Pending = std::unique_ptr<PendingCollective>;

class CollectiveGroup {
 public:
  virtual ~CollectiveGroup() = default;
  // The MPI group of the same ranks.
  virtual const Comm& comm() const = 0;
  int size() const { return comm().size(); }
  int rank() const { return comm().rank(); }
  // As Comm's collectives of the same names (parallel/comm.h), on device buffers.
  virtual Pending iallgather(const float* send, float* recv, int64_t n) const = 0;
  virtual Pending ireduce_scatter_sum(const float* send, float* recv, int64_t n) const = 0;
  // Blocking (in the sense of wait() above). allreduce_sum is in place (HSDP's cross-replica sum).
  virtual void allreduce_sum(float* data, int64_t n) const = 0;
  virtual void alltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                         Counts recv_displs) const = 0;
};

// Makes the group of a Comm for the compute device (DistributedModel asks it for world, dp and ep).
using GroupFactory = std::unique_ptr<CollectiveGroup> (*)(const Comm& comm);

class MpiGroup final : public CollectiveGroup {
 public:
  explicit MpiGroup(const Comm& comm) : comm_(comm) {}
  const Comm& comm() const override { return comm_; }
  Pending iallgather(const float* send, float* recv, int64_t n) const override;
  Pending ireduce_scatter_sum(const float* send, float* recv, int64_t n) const override;
  void allreduce_sum(float* data, int64_t n) const override { comm_.allreduce_sum(data, n); }
  void alltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                 Counts recv_displs) const override {
    comm_.alltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs);
  }
  static std::unique_ptr<CollectiveGroup> make(const Comm& comm) { return std::make_unique<MpiGroup>(comm); }

 private:
  const Comm& comm_;
};

}  // namespace moe
