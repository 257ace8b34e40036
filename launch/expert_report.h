// The trainer's report of which routed experts each MoE layer uses (train.expert_report_every):
// tokens per expert summed over the steps since the previous report, printed as the top experts
// of every layer with their share of the layer's routed tokens,
//   top experts L1: 3:14% 7:13% 0:12% 5:12%
// and written whole to metrics.jsonl. It reads the step's expert loads after they were reduced
// over the ranks (parallel/train_step.h), so every rank holds the same counts; rank 0 prints.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/tensor.h"

namespace moe {

class ExpertReport {
 public:
  // layers: the block index of each MoE layer (the rows of the loads), for the L<i> labels.
  explicit ExpertReport(std::vector<int> layers) : layers_(std::move(layers)) {}

  // Adds one step's loads [moe layers, routed experts] (host).
  void add(const Tensor& load_LE);
  int64_t steps() const { return steps_; }

  // One line per MoE layer: "top experts L<block>: e:share% ..." with the `top` most used experts
  // (ties: the lower id first); shares rounded to whole percents.
  std::vector<std::string> lines(int top = 4) const;
  // {"expert_counts": [[tokens per expert] per layer], "expert_counts_layers": [blocks],
  //  "expert_counts_steps": steps summed}
  nlohmann::json json() const;
  // Starts the next interval.
  void reset();

 private:
  std::vector<int> layers_;
  std::vector<std::vector<int64_t>> counts_;  // [layer][expert]
  int64_t steps_ = 0;
};

}  // namespace moe
