#include "parallel/group.h"

namespace moe {
namespace {

struct MpiPending final : PendingCollective {
  explicit MpiPending(Request r) : req(std::move(r)) {}
  void wait() override { req.wait(); }
  Request req;  // its destructor waits if nothing did
};

}  // namespace

Pending MpiGroup::iallgather(const float* send, float* recv, int64_t n) const {
  return std::make_unique<MpiPending>(comm_.iallgather(send, recv, n));
}

Pending MpiGroup::ireduce_scatter_sum(const float* send, float* recv, int64_t n) const {
  return std::make_unique<MpiPending>(comm_.ireduce_scatter_sum(send, recv, n));
}

}  // namespace moe
