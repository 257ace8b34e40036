// Per-phase wall-clock accounting for `moe bench train` and the training log: where does a step's
// time go (GEMM, attention, MoE routing/dispatch, the rest)? Phases nest; each second is charged
// to exactly one phase, the innermost open one, so the split adds up to the total.
// Accounting is per thread: the thread that drives the step sees the split (the pool's workers
// run inside its phases).
#pragma once
#include <map>
#include <string>

namespace moe {

class Profiler {
 public:
  // Opens `phase` until the returned scope ends. Cheap (two clock reads) and always on.
  class Scope {
   public:
    // A `leaf` phase (e.g. "gemm") is charged to the enclosing phase when there is one, so the GEMMs
    // of the experts count as "experts" and only the dense layers' GEMMs as "gemm".
    explicit Scope(const char* phase, bool leaf = false);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    bool pushed_ = false;
  };
  static void reset();
  // Seconds per phase since the last reset; time outside any phase is "other".
  static std::map<std::string, double> seconds();
};

}  // namespace moe

#define MOE_PHASE_CAT2(a, b) a##b
#define MOE_PHASE_CAT(a, b) MOE_PHASE_CAT2(a, b)
#define MOE_PHASE(name) ::moe::Profiler::Scope MOE_PHASE_CAT(moe_phase_, __LINE__)(name)
#define MOE_LEAF_PHASE(name) ::moe::Profiler::Scope MOE_PHASE_CAT(moe_phase_, __LINE__)(name, true)
