#include "launch/expert_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "framework/error.h"

namespace moe {

void ExpertReport::add(const Tensor& load) {
  if (load.numel() == 0) return;
  const int64_t L = load.dim(0), E = load.dim(1);
  MOE_CHECK(L == int64_t(layers_.size()), "ExpertReport: ", L, " load rows for ", layers_.size(), " MoE layers");
  if (counts_.empty()) counts_.assign(size_t(L), std::vector<int64_t>(size_t(E), 0));
  for (int64_t l = 0; l < L; ++l)
    for (int64_t e = 0; e < E; ++e) counts_[size_t(l)][size_t(e)] += std::llround(load.f32()[l * E + e]);  // whole tokens
  ++steps_;
}

std::vector<std::string> ExpertReport::lines(int top) const {
  std::vector<std::string> out;
  for (size_t l = 0; l < counts_.size(); ++l) {
    const std::vector<int64_t>& c = counts_[l];
    const double total = double(std::accumulate(c.begin(), c.end(), int64_t(0)));
    std::vector<int> order(c.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return c[size_t(a)] > c[size_t(b)]; });
    std::string line = "top experts L" + std::to_string(layers_[l]) + ":";
    for (int i = 0; i < std::min<int>(top, int(order.size())); ++i) {
      char buf[32];
      const double share = total > 0 ? 100.0 * double(c[size_t(order[size_t(i)])]) / total : 0.0;
      snprintf(buf, sizeof buf, " %d:%.0f%%", order[size_t(i)], share);
      line += buf;
    }
    out.push_back(line);
  }
  return out;
}

nlohmann::json ExpertReport::json() const {
  return {{"expert_counts", counts_}, {"expert_counts_layers", layers_}, {"expert_counts_steps", steps_}};
}

void ExpertReport::reset() {
  for (std::vector<int64_t>& row : counts_) std::fill(row.begin(), row.end(), 0);
  steps_ = 0;
}

}  // namespace moe
