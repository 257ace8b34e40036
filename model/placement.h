// How one model instance fits into a larger job, seen from the model's side. model/ never includes
// parallel/: the distributed wrapper implements these interfaces and hands them to the model.
//
//   ModelPlacement  which routed experts this process computes (its expert part) and whether the
//                   ParamStore owns storage or an outside owner binds it unit by unit (FSDP).
//   UnitHooks       called around every use of a parameter unit, so an owner can all-gather it
//                   before and free it after, and reduce-scatter its gradient after backward.
//   ExpertExchange  moves token rows between the processes of an expert-parallel group (MoE
//                   dispatch and combine): route -> dispatch -> experts -> combine.
#pragma once
#include <cstdint>
#include <vector>

namespace moe {

struct ModelPlacement {
  int expert_parts = 1;   // routed experts split into this many equal parts (parallel.ep)
  int local_part = 0;     // the part this process computes
  bool own_storage = true;  // false: ParamStore::allocate_unbound(), units bound by UnitHooks
};

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  // The unit's parameters are bound and valid until release().
  virtual void acquire(int unit) = 0;
  virtual void release(int unit) = 0;
  // The unit will be needed soon (the next block): start fetching it.
  virtual void prefetch(int /*unit*/) {}
  // Backward: parameters bound and a gradient buffer bound that gradients accumulate into; at
  // release_grad the contributions are handed to their owner (added to this step's gradients).
  virtual void acquire_grad(int unit) = 0;
  virtual void release_grad(int unit) = 0;
};

// The counts of one dispatch, [ranks][local experts] for what this rank receives.
struct ExchangePlan {
  int ranks = 1, local_experts = 0;
  std::vector<int64_t> send_rows;  // [ranks]: rows this rank sends to each rank
  std::vector<int64_t> recv_rows;  // [ranks][local experts]: rows each rank sends to each of our experts
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // counts_E[e] (all E routed experts, global ids): rows this rank sends to expert e. Rank r of
  // the group owns experts [r*E/ranks, (r+1)*E/ranks). Collective over the group.
  virtual void plan(const int64_t* counts_E, int64_t E, ExchangePlan& plan) const = 0;
  // send: rows in global expert order (so each destination's rows are contiguous);
  // recv: rows from every rank, grouped [source rank][local expert]. Rows of D floats.
  virtual void dispatch(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const = 0;
  // The reverse route: send grouped [source rank][local expert] goes back into recv in global
  // expert order.
  virtual void combine(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const = 0;
};

}  // namespace moe
