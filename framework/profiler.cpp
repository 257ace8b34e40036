#include "framework/profiler.h"

#include <chrono>
#include <vector>

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

struct State {
  std::vector<const char*> stack{"other"};
  Clock::time_point last = Clock::now();
  std::map<std::string, double> seconds;
  // Charges the time since the last event to the innermost open phase.
  void charge() {
    auto now = Clock::now();
    seconds[stack.back()] += std::chrono::duration<double>(now - last).count();
    last = now;
  }
};

State& state() {
  thread_local State s;  // phases opened on other threads never mix with the driver's
  return s;
}

}  // namespace

Profiler::Scope::Scope(const char* phase, bool leaf) {
  State& s = state();
  if (leaf && s.stack.size() > 1) return;  // charged to the enclosing phase
  s.charge();
  s.stack.push_back(phase);
  pushed_ = true;
}

Profiler::Scope::~Scope() {
  if (!pushed_) return;
  State& s = state();
  s.charge();
  s.stack.pop_back();
}

void Profiler::reset() {
  State& s = state();
  s.seconds.clear();
  s.last = Clock::now();
}

std::map<std::string, double> Profiler::seconds() {
  State& s = state();
  s.charge();
  return s.seconds;
}

}  // namespace moe
