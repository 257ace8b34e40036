#include "launch/tasks.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "framework/bf16_weights.h"
#include "framework/error.h"
#include "framework/json_depth.h"

namespace moe {
namespace {

constexpr const char* kItemShape = R"({"context": "...", "choices": ["...", ...], "gold": i})";

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string json_reason(const nlohmann::json::exception& e) {
  std::string what = e.what();
  if (auto p = what.find("] "); !what.empty() && what[0] == '[' && p != std::string::npos) what = what.substr(p + 2);
  return what;
}

TaskItem parse_item(const std::string& text, const std::string& where) {
  check_json_depth(text, where, std::string("one object per line: ") + kItemShape);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw error(where, ": malformed JSON (", json_reason(e), "; expected one object per line: ", kItemShape, ")");
  }
  if (!j.is_object()) throw error(where, ": not a JSON object (expected ", kItemShape, ")");
  for (const char* key : {"context", "choices", "gold"})
    if (!j.contains(key)) throw error(where, ": missing key \"", key, "\" (expected ", kItemShape, ")");
  TaskItem item;
  if (!j["context"].is_string()) throw error(where, ": \"context\" is not a string (expected ", kItemShape, ")");
  item.context = j["context"].get<std::string>();
  const nlohmann::json& choices = j["choices"];
  if (!choices.is_array()) throw error(where, ": \"choices\" is not an array (expected a list of strings)");
  if (choices.empty()) throw error(where, ": \"choices\" is empty (expected at least one string)");
  for (size_t c = 0; c < choices.size(); ++c) {
    if (!choices[c].is_string()) throw error(where, ": choice ", c, " is not a string (expected a list of strings)");
    item.choices.push_back(choices[c].get<std::string>());
    if (item.choices.back().empty()) throw error(where, ": choice ", c, " is empty (expected some text to score)");
  }
  const nlohmann::json& gold = j["gold"];
  if (!gold.is_number_integer()) throw error(where, ": \"gold\" is not an integer (expected the index of the right choice)");
  const int64_t g = gold.get<int64_t>();
  if (g < 0 || g >= int64_t(item.choices.size()))
    throw error(where, ": \"gold\" is ", g, " (expected 0 <= gold < ", item.choices.size(), ", the number of choices)");
  item.gold = int(g);
  return item;
}

// Standard error of the mean of n values that are 0 or 1, p of them 1 (lm-evaluation-harness).
double stderr_of_rate(double p, int64_t n) {
  return n < 2 ? std::nan("") : std::sqrt(p * (1 - p) / double(n - 1));
}

}  // namespace

TaskSet load_task(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot open (expected a task file, JSON Lines of ", kItemShape, ")");
  TaskSet task;
  task.path = path;
  task.name = std::filesystem::path(path).filename().string();
  if (task.name.size() > 6 && task.name.ends_with(".jsonl")) task.name.resize(task.name.size() - 6);
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    task.items.push_back(parse_item(line, path + ":" + std::to_string(number)));
    task.items.back().line = number;
  }
  if (task.items.empty()) throw error(path, ": no items (expected JSON Lines of ", kItemShape, ")");
  return task;
}

std::vector<double> score_continuations(DeepSeekV3& model, const std::vector<ScoreRequest>& requests, int B, int T) {
  MOE_CHECK(B >= 1 && T >= 1);
  // A request's window: the last T tokens of context + continuation, without the final token
  // (it is only a target). The continuation is the last `continuation.size()` targets.
  auto window_len = [&](const ScoreRequest& r) {
    return std::min<int64_t>(T, int64_t(r.context.size() + r.continuation.size()) - 1);
  };
  for (const ScoreRequest& r : requests)
    MOE_CHECK(!r.context.empty() && !r.continuation.empty() && int64_t(r.continuation.size()) <= T);
  // Longest first, so each batch pads little; the order never changes a score.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return window_len(requests[a]) > window_len(requests[b]); });

  std::vector<double> loglik(requests.size(), 0.0);
  std::vector<int32_t> ids, targets, full;
  const Bf16WeightScope weights_held;  // the weights hold still while scoring
  for (size_t first = 0; first < order.size(); first += size_t(B)) {
    const size_t n = std::min(order.size() - first, size_t(B));
    const int64_t L = window_len(requests[order[first]]);  // longest of this batch
    ids.assign(n * size_t(L), 0);
    targets.assign(n * size_t(L), 0);
    for (size_t i = 0; i < n; ++i) {
      const ScoreRequest& r = requests[order[first + i]];
      full = r.context;
      full.insert(full.end(), r.continuation.begin(), r.continuation.end());
      const int64_t len = window_len(r), start = int64_t(full.size()) - 1 - len;
      std::copy(full.begin() + start, full.end() - 1, ids.begin() + int64_t(i) * L);
      std::copy(full.begin() + start + 1, full.end(), targets.begin() + int64_t(i) * L);
    }
    model.forward_ranked(ids.data(), targets.data(), int64_t(n), L, /*count_load=*/false, nullptr);
    const std::vector<float> losses = model.token_losses();
    for (size_t i = 0; i < n; ++i) {
      const ScoreRequest& r = requests[order[first + i]];
      const int64_t len = window_len(r), cont = int64_t(r.continuation.size());
      double sum = 0;
      for (int64_t t = len - cont; t < len; ++t) sum -= losses[size_t(int64_t(i) * L + t)];
      loglik[order[first + i]] = sum;
    }
  }
  return loglik;
}

TaskResult summarize_task(const TaskSet& task, const std::vector<double>& loglik) {
  TaskResult r;
  r.name = task.name;
  r.n = int64_t(task.items.size());
  size_t k = 0;
  int64_t right = 0, right_norm = 0;
  for (const TaskItem& item : task.items) {
    size_t best = 0, best_norm = 0;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      MOE_CHECK(k + c < loglik.size());
      const double ll = loglik[k + c], per_byte = ll / double(item.choices[c].size());
      if (ll > loglik[k + best]) best = c;
      if (per_byte > loglik[k + best_norm] / double(item.choices[best_norm].size())) best_norm = c;
    }
    right += best == size_t(item.gold);
    right_norm += best_norm == size_t(item.gold);
    r.chance += 1.0 / double(item.choices.size());
    k += item.choices.size();
  }
  MOE_CHECK(k == loglik.size());
  r.acc = double(right) / double(r.n);
  r.acc_norm = double(right_norm) / double(r.n);
  r.acc_stderr = stderr_of_rate(r.acc, r.n);
  r.acc_norm_stderr = stderr_of_rate(r.acc_norm, r.n);
  r.chance /= double(r.n);
  return r;
}

TaskResult evaluate_task(DeepSeekV3& model, const Tokenizer& tok, const TaskSet& task, int B, int T) {
  const int64_t V = model.config().vocab_size;
  auto to_ids = [&](const std::vector<uint32_t>& in, const TaskItem& item) {
    std::vector<int32_t> out(in.begin(), in.end());
    for (int32_t id : out)
      if (id >= V)
        throw error(task.path, ":", item.line, ": token id ", id, " from the tokenizer ", tok.name(),
                    " (expected ids below the model's vocab_size ", V, ")");
    return out;
  };
  std::vector<ScoreRequest> requests;
  for (const TaskItem& item : task.items) {
    std::vector<int32_t> context = to_ids(tok.encode(item.context), item);
    if (context.empty()) context.push_back(int32_t(tok.eos_id()));
    for (size_t c = 0; c < item.choices.size(); ++c) {
      ScoreRequest r{context, to_ids(tok.encode_continuation(item.choices[c]), item)};
      if (r.continuation.empty())
        throw error(task.path, ":", item.line, ": choice ", c, " encodes to no tokens (expected some text to score)");
      if (int64_t(r.continuation.size()) > T)
        throw error(task.path, ":", item.line, ": choice ", c, " is ", r.continuation.size(),
                    " tokens (expected at most the model's seq_len, ", T, ")");
      requests.push_back(std::move(r));
    }
  }
  return summarize_task(task, score_continuations(model, requests, B, T));
}

}  // namespace moe
