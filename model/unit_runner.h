// The model's passes as a sequence of compute units, and the one place that calls UnitHooks
// (model/placement.h) around them, the shape of torchtitan's fully_shard pre/post hooks. A
// compute unit (the embedding, one block, the head) names the parameter units (model/params.h) it
// reads; the model runs each unit's math through run() and never calls a hook itself:
//   before the unit: acquire each of its parameter units in order (acquire_grad in backward), then
//                    prefetch the parameter units of the unit it names to prefetch (the next block
//                    in this pass), so their gather overlaps this unit's compute
//   after the unit:  release them in reverse order (release_grad in backward)
// With no hooks (a single process owning its storage) run() just runs the body.
#pragma once
#include <utility>
#include <vector>

#include "model/placement.h"

namespace moe {

struct ComputeUnit {
  std::vector<int> params;  // parameter units, acquired in this order
  // Compute units whose parameters are prefetched when this one starts, per pass (-1: none).
  int prefetch_forward = -1, prefetch_backward = -1;
};

enum class Pass { Forward, Backward };

class UnitRunner {
 public:
  void set_hooks(UnitHooks* hooks) { hooks_ = hooks; }
  // Appends a unit; returns its index. Units are added in forward execution order.
  int add(ComputeUnit unit) {
    units_.push_back(std::move(unit));
    return int(units_.size()) - 1;
  }
  const std::vector<ComputeUnit>& units() const { return units_; }

  // body() with compute unit `unit`'s parameters (and, in backward, gradient buffers) bound.
  template <class Body>
  void run(int unit, Pass pass, Body&& body) {
    before(unit, pass);
    body();
    after(unit, pass);
  }

 private:
  void before(int unit, Pass pass) {
    if (!hooks_) return;
    const ComputeUnit& u = units_[size_t(unit)];
    for (int p : u.params) pass == Pass::Backward ? hooks_->acquire_grad(p) : hooks_->acquire(p);
    const int next = pass == Pass::Backward ? u.prefetch_backward : u.prefetch_forward;
    if (next >= 0)
      for (int p : units_[size_t(next)].params) hooks_->prefetch(p);
  }
  void after(int unit, Pass pass) {
    if (!hooks_) return;
    const std::vector<int>& params = units_[size_t(unit)].params;
    for (auto p = params.rbegin(); p != params.rend(); ++p)
      pass == Pass::Backward ? hooks_->release_grad(*p) : hooks_->release(*p);
  }

  UnitHooks* hooks_ = nullptr;
  std::vector<ComputeUnit> units_;
};

}  // namespace moe
