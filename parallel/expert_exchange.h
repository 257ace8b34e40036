// Expert parallelism's token exchange: MoE dispatch and combine as all-to-all-v over the ep group
// (DeviceMesh::ep_comm). Rank r of the group owns routed experts [r*E/ep, (r+1)*E/ep); rows go
// to their expert's owner and come back in the same places. Dropless: every routed copy travels,
// however unbalanced the routing (counts are exchanged first).
#pragma once
#include "model/placement.h"
#include "parallel/group.h"

namespace moe {

class AllToAllExchange : public ExpertExchange {
 public:
  // Counts go over ep_group.comm() (MPI, host); rows over ep_group (on the compute device).
  explicit AllToAllExchange(const CollectiveGroup& ep_group) : group_(ep_group) {}
  void plan(const int64_t* counts_E, int64_t E, ExchangePlan& plan) const override;
  void dispatch(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const override;
  void combine(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const override;

 private:
  const CollectiveGroup& group_;
};

}  // namespace moe
