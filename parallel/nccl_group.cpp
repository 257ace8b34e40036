#include "parallel/nccl_group.h"

namespace moe {
namespace {

struct NcclPending final : PendingCollective {
  explicit NcclPending(NcclRequest r) : req(std::move(r)) {}
  void wait() override { req.wait(cudaStream_t(nullptr)); }  // the compute stream waits, not the host
  NcclRequest req;  // its destructor waits on the host if nothing waited
};

}  // namespace

Pending NcclGroup::iallgather(const float* send, float* recv, int64_t n) const {
  return std::make_unique<NcclPending>(nccl_.iallgather(send, recv, n));
}

Pending NcclGroup::ireduce_scatter_sum(const float* send, float* recv, int64_t n) const {
  return std::make_unique<NcclPending>(nccl_.ireduce_scatter_sum(send, recv, n));
}

}  // namespace moe
