#include "launch/numeric_guard.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "data_pipeline/out_file.h"
#include "framework/error.h"

namespace fs = std::filesystem;

namespace moe {

void SampleSkips::add(Range r) {
  if (r.first >= r.second) return;
  std::vector<Range> out;
  for (const Range& x : ranges_) {
    if (x.second < r.first || x.first > r.second) {
      out.push_back(x);
    } else {  // overlaps or touches: absorb it
      r.first = std::min(r.first, x.first);
      r.second = std::max(r.second, x.second);
    }
  }
  out.push_back(r);
  std::sort(out.begin(), out.end());
  ranges_ = std::move(out);
}

int64_t SampleSkips::samples() const {
  int64_t n = 0;
  for (const Range& r : ranges_) n += r.second - r.first;
  return n;
}

std::vector<SampleSkips::Range> SampleSkips::read(int64_t first, int64_t n) const {
  // Position p of the cut stream is sample p plus the lengths of the ranges at or below it.
  int64_t real = first;
  size_t i = 0;
  for (; i < ranges_.size() && ranges_[i].first <= real; ++i) real += ranges_[i].second - ranges_[i].first;
  std::vector<Range> runs;
  while (n > 0) {
    const int64_t next = i < ranges_.size() ? ranges_[i].first : std::numeric_limits<int64_t>::max();
    const int64_t k = std::min(n, next - real);
    runs.push_back({real, real + k});
    n -= k;
    if (n > 0) real = ranges_[i++].second;  // ranges never touch: the next one starts later
  }
  return runs;
}

nlohmann::json SampleSkips::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const Range& r : ranges_) j.push_back({r.first, r.second});
  return j;
}

SampleSkips SampleSkips::from_json(const nlohmann::json& j, const std::string& what) {
  SampleSkips s;
  bool ok = j.is_array();
  for (size_t k = 0; ok && k < j.size(); ++k) {
    const nlohmann::json& r = j[k];
    ok = r.is_array() && r.size() == 2 && r[0].is_number_integer() && r[1].is_number_integer() &&
         r[0].get<int64_t>() >= 0 && r[0].get<int64_t>() < r[1].get<int64_t>();
    if (ok) s.add({r[0].get<int64_t>(), r[1].get<int64_t>()});
  }
  if (!ok) throw error(what, ": skip_samples is ", j.dump().substr(0, 80), " (expected a list of [begin, end] sample ranges, 0 <= begin < end)");
  return s;
}

namespace {
constexpr const char* kSkipFile = "skipped_samples.json";

}  // namespace

NumericGuard::NumericGuard(const TrainConfig& t, std::string run_dir)
    : max_bad_steps_(t.max_bad_steps), max_rollbacks_(t.max_rollbacks), run_dir_(std::move(run_dir)) {
  std::ifstream in(file(), std::ios::binary);
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("skip_samples"))
    throw error(file(), ": not a skip list (expected a JSON object with skip_samples, as written by a rollback)");
  skips_ = SampleSkips::from_json(j["skip_samples"], file());
  has_file_ = true;
  if (j.contains("rollbacks") && j["rollbacks"].is_array()) rollbacks_ = j["rollbacks"];
}

bool NumericGuard::add_checkpoint_skips(const nlohmann::json& meta) {
  if (!meta.contains("skip_samples")) return false;
  const SampleSkips more = SampleSkips::from_json(meta["skip_samples"], "checkpoint meta.json");
  for (const SampleSkips::Range& r : more.ranges()) skips_.add(r);
  return !more.ranges().empty();
}

std::string NumericGuard::file() const { return (fs::path(run_dir_) / kSkipFile).string(); }

std::string NumericGuard::reason(const StepStats& s) {
  if (!std::isfinite(s.loss)) return "non-finite loss";
  if (!std::isfinite(s.grad_norm)) return "non-finite grad norm";
  return "non-finite local loss on some rank";
}

bool NumericGuard::bad_step(BadStep b) {
  streak_.push_back(std::move(b));
  return max_bad_steps_ > 0 && int64_t(streak_.size()) >= max_bad_steps_;
}

void NumericGuard::check_rollback(const std::string& checkpoint_dir, int64_t checkpoint_step) const {
  const int64_t first = streak_.front().step, last = streak_.back().step;
  const std::string what = std::to_string(streak_.size()) + " non-finite steps in a row (steps " +
                           std::to_string(first) + ".." + std::to_string(last) + ", train.max_bad_steps " +
                           std::to_string(max_bad_steps_) + ")";
  if (checkpoint_dir.empty())
    throw error(what, " and no committed checkpoint to roll back to (expected checkpoint.every > 0 with a checkpoint "
                "before step ", first, ", or train.max_bad_steps 0 to only skip such steps)");
  if (rollbacks() >= max_rollbacks_)
    throw error(what, " and ", rollbacks(), " rollback(s) already recorded in ", file(), ", train.max_rollbacks is ",
                max_rollbacks_, " (expected the data or the settings to be looked at before going on)");
  if (checkpoint_step >= first)  // periodic saves wait during a streak, so this is a bug if it happens
    throw error(what, ": the last committed checkpoint ", checkpoint_dir, " is from inside the streak");
}

nlohmann::json NumericGuard::rollback(const std::string& checkpoint_dir, int64_t checkpoint_step, bool root) {
  nlohmann::json steps = nlohmann::json::array();
  SampleSkips streak_samples;
  for (const BadStep& b : streak_) {
    steps.push_back(b.step);
    for (const SampleSkips::Range& r : b.samples) skips_.add(r), streak_samples.add(r);
  }
  nlohmann::json record = {{"at_step", streak_.back().step}, {"to_step", checkpoint_step},
                           {"checkpoint", checkpoint_dir}, {"bad_steps", steps}, {"samples", streak_samples.to_json()}};
  rollbacks_.push_back(record);
  streak_.clear();
  if (root) write_file();
  return record;
}

void NumericGuard::write_file() const {
  const nlohmann::json j = {{"skip_samples", skips_.to_json()}, {"rollbacks", rollbacks_}};
  fs::create_directories(run_dir_);
  write_file_atomic(file(), j.dump() + "\n");
}

std::optional<SpikeDetector::Spike> SpikeDetector::add(double loss) {
  if (window_ <= 0) return std::nullopt;
  std::optional<Spike> spike;
  if (int(losses_.size()) == window_) {
    double mean = 0, var = 0;
    for (double x : losses_) mean += x;
    mean /= window_;
    for (double x : losses_) var += (x - mean) * (x - mean);
    const double sd = std::sqrt(var / (window_ - 1));
    if (sd > 0 && (loss - mean) / sd > zscore_) spike = Spike{loss, mean, sd, (loss - mean) / sd};
    losses_.erase(losses_.begin());
  }
  losses_.push_back(loss);
  return spike;
}

InjectedFaults InjectedFaults::from_env() {
  const char* s = std::getenv("MOE_FAULT_INJECT");
  return s ? parse(s) : InjectedFaults();
}

InjectedFaults InjectedFaults::parse(const std::string& spec) {
  auto bad = [&] {
    return error("MOE_FAULT_INJECT='", spec,
                 "' (expected RANK:STEP, e.g. 1:3, or KIND@step=N[-M][,rank=R] with KIND crash, nan_loss, "
                 "nan_grad or stall_save, e.g. nan_grad@step=7,rank=1; several separated by ';')");
  };
  // A whole token as a non-negative integer.
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 15 || s.find_first_not_of("0123456789") != std::string::npos) throw bad();
    return std::stoll(s);
  };
  InjectedFaults out;
  std::stringstream list(spec);
  for (std::string item; std::getline(list, item, ';');) {
    if (item.empty()) continue;
    Fault f;
    const size_t at = item.find('@');
    if (at == std::string::npos) {  // RANK:STEP
      const size_t colon = item.find(':');
      if (colon == std::string::npos) throw bad();
      f.kind = "crash";
      f.rank = int(number(item.substr(0, colon)));
      f.first = f.last = number(item.substr(colon + 1));
    } else {
      f.kind = item.substr(0, at);
      if (f.kind != "crash" && f.kind != "nan_loss" && f.kind != "nan_grad" && f.kind != "stall_save") throw bad();
      bool has_step = false;
      std::stringstream params(item.substr(at + 1));
      for (std::string kv; std::getline(params, kv, ',');) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos) throw bad();
        const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
        if (key == "step") {
          const size_t dash = value.find('-');
          f.first = number(value.substr(0, dash));
          f.last = dash == std::string::npos ? f.first : number(value.substr(dash + 1));
          if (f.last < f.first) throw bad();
          has_step = true;
        } else if (key == "rank") {
          f.rank = int(number(value));
        } else {
          throw bad();
        }
      }
      if (!has_step) throw bad();
    }
    out.faults_.push_back(f);
  }
  if (out.faults_.empty() && !spec.empty()) throw bad();
  return out;
}

InjectedFaults::AtStep InjectedFaults::take(int rank, int64_t step) {
  AtStep at;
  for (size_t i = 0; i < faults_.size(); ++i) {
    const Fault& f = faults_[i];
    if (step < f.first || step > f.last || (f.rank >= 0 && f.rank != rank)) continue;
    if (!fired_.insert({i, step}).second) continue;
    if (f.kind == "crash") at.crash = true;
    if (f.kind == "nan_loss") at.step.nan_loss = true;
    if (f.kind == "nan_grad") at.step.nan_grad = true;
    if (f.kind == "stall_save") at.stall_save = true;
  }
  return at;
}

}  // namespace moe
