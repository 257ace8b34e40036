// The numeric guard of `moe train` (docs/architecture.md, "Numeric guard"). train_step skips the
// update of a step whose loss or gradient norm is not finite on some rank (parallel/train_step.h);
// this file holds what the trainer does about it:
//
//   - SampleSkips: global sample ranges training never reads. Step s reads the G samples
//     [s·G, (s+1)·G) of the stream with these ranges cut out, so skipping data leaves every other
//     step's batch and the schedule as they were. Recorded in <out_dir>/skipped_samples.json and
//     in each checkpoint's meta.json: a resume, or a new run given the file up front, skips the same.
//   - NumericGuard: counts bad steps in a row; after train.max_bad_steps of them the trainer rolls
//     back to the last committed checkpoint and the streak's samples join the skips. While a
//     streak is on, periodic checkpoints wait (the rollback needs the state from before it).
//   - SpikeDetector: z-score of the loss against the last train.spike_window losses; it only logs.
//   - InjectedFaults: MOE_FAULT_INJECT, for tests.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/config.h"
#include "parallel/train_step.h"

namespace moe {

// Sorted, disjoint, non-adjacent [begin, end) ranges of global sample indices.
class SampleSkips {
 public:
  using Range = std::pair<int64_t, int64_t>;
  void add(Range r);  // merged with any range it overlaps or touches
  const std::vector<Range>& ranges() const { return ranges_; }
  int64_t samples() const;  // how many samples are skipped
  // The samples that positions [first, first + n) of the cut stream read: contiguous runs of
  // real sample indices, in order. One run [first, first + n) when nothing is skipped.
  std::vector<Range> read(int64_t first, int64_t n) const;
  nlohmann::json to_json() const;  // [[begin, end], ...]
  // Throws moe::Error naming `what` unless j is such a list with 0 <= begin < end.
  static SampleSkips from_json(const nlohmann::json& j, const std::string& what);

 private:
  std::vector<Range> ranges_;
};

// One bad step: its number (1-based, as logged), why, and the samples it read.
struct BadStep {
  int64_t step = 0;
  std::string reason;  // "non-finite loss", "non-finite grad norm"
  std::vector<SampleSkips::Range> samples;
};

class NumericGuard {
 public:
  // run_dir: where skipped_samples.json lives. Reads it if present (every rank reads it).
  NumericGuard(const TrainConfig& t, std::string run_dir);
  // A resumed checkpoint's meta.json: its skips join the run directory's. False if it has none.
  bool add_checkpoint_skips(const nlohmann::json& meta);
  bool has_file() const { return has_file_; }
  const SampleSkips& skips() const { return skips_; }
  std::string file() const;  // <run_dir>/skipped_samples.json
  int rollbacks() const { return int(rollbacks_.size()); }

  // Why a skipped step was bad, from its (global) stats.
  static std::string reason(const StepStats& s);
  // Records a skipped step; true when train.max_bad_steps are now bad in a row (a rollback is due).
  bool bad_step(BadStep b);
  void good_step() { streak_.clear(); }
  const std::vector<BadStep>& streak() const { return streak_; }
  // Periodic checkpoints wait while a streak that may end in a rollback is on.
  bool holding_saves() const { return max_bad_steps_ > 0 && !streak_.empty(); }

  // Throws moe::Error (the job ends) if no rollback is allowed: none committed (checkpoint_dir
  // ""), train.max_rollbacks reached, or the checkpoint is from inside the streak.
  void check_rollback(const std::string& checkpoint_dir, int64_t checkpoint_step) const;
  // The streak's samples join the skips and the rollback is recorded; root writes the file.
  // Returns the record (also for metrics.jsonl). The streak is cleared.
  nlohmann::json rollback(const std::string& checkpoint_dir, int64_t checkpoint_step, bool root);

 private:
  void write_file() const;

  int max_bad_steps_, max_rollbacks_;
  std::string run_dir_;
  bool has_file_ = false;
  SampleSkips skips_;
  nlohmann::json rollbacks_ = nlohmann::json::array();
  std::vector<BadStep> streak_;
};

// Loss spikes: loss > mean + z·std of the previous `window` losses (window 0: off).
class SpikeDetector {
 public:
  SpikeDetector(int window, double zscore) : window_(window), zscore_(zscore) {}
  struct Spike {
    double loss, mean, std, zscore;
  };
  // Adds the loss of a step that updated; a spike when it is one (the loss joins the window anyway).
  std::optional<Spike> add(double loss);
  void reset() { losses_.clear(); }

 private:
  int window_;
  double zscore_;
  std::vector<double> losses_;  // the last `window` losses, oldest first
};

// MOE_FAULT_INJECT: faults separated by ';', each
//   RANK:STEP                         that rank throws at the start of that step (a crashed node)
//   KIND@step=N[-M][,rank=R]          KIND crash, nan_loss, nan_grad or stall_save (the checkpoint
//                                     saved after that step never finishes writing); steps N..M;
//                                     every rank unless rank= is given
// Steps are 0-based (step N is logged as step N+1). A fault fires the first time its step runs in
// the process: after a rollback the same step number runs clean, as it would after a transient fault.
class InjectedFaults {
 public:
  static InjectedFaults from_env();  // throws moe::Error on a malformed value
  static InjectedFaults parse(const std::string& spec);
  struct AtStep {
    bool crash = false;
    bool stall_save = false;  // this step's checkpoint write hangs (stall_save)
    StepFault step;
  };
  AtStep take(int rank, int64_t step);

 private:
  struct Fault {
    std::string kind;
    int64_t first = 0, last = 0;
    int rank = -1;  // -1: every rank
  };
  std::vector<Fault> faults_;
  std::set<std::pair<size_t, int64_t>> fired_;
};

}  // namespace moe
