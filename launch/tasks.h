// Multiple-choice downstream tasks, scored the way lm-evaluation-harness scores them.
//
// A task file is JSON Lines, one item per line:  {"context": "...", "choices": ["...", ...], "gold": i}
// (other keys are ignored, blank lines skipped). Each choice is scored by the model's log-likelihood
// of the choice given the context:
//   ll_c = sum_t log p(choice_t | context, choice_<t)      (tokens of encode(context) + encode_continuation(choice))
//   acc      = mean over items of [argmax_c ll_c == gold]
//   acc_norm = mean over items of [argmax_c ll_c / bytes(choice_c) == gold]     (ties: the first choice)
//   stderr   = sqrt(p (1 - p) / (n - 1))    (the harness's standard error of a mean of 0/1 values)
// Choices usually start with their separator (" " or "\n"): the context is scored as given.
// A window holds at most seq_len tokens: longer context + choice is cut from the left (the start of the
// context is dropped, as the harness does); a choice alone longer than seq_len is an error. An empty
// context is replaced by the end-of-document token, so the first choice token has something to follow.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data_pipeline/tokenizer.h"
#include "model/model.h"

namespace moe {

struct TaskItem {
  std::string context;
  std::vector<std::string> choices;
  int gold = 0;
  int64_t line = 0;  // 1-based line of the task file, for messages
};

struct TaskSet {
  std::string name;  // file name without ".jsonl"
  std::string path;
  std::vector<TaskItem> items;
};

// Reads and checks a task file. Errors name FILE:LINE and what was expected (malformed JSON, a
// missing or mistyped key, empty choices, gold out of range), or the file (missing, no items).
TaskSet load_task(const std::string& path);

// One continuation to score: context tokens (non-empty) followed by continuation tokens.
struct ScoreRequest {
  std::vector<int32_t> context, continuation;
};

// Summed log-likelihood (nats, <= 0) of each request's continuation given its context. Windows of
// at most T tokens, B per forward, longest first, each batch right-padded to its longest window
// (causal attention: padding after a position never changes it).
std::vector<double> score_continuations(DeepSeekV3& model, const std::vector<ScoreRequest>& requests, int B, int T);

struct TaskResult {
  std::string name;
  int64_t n = 0;  // items
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;
  double chance = 0;  // expected acc of a uniform guess: mean of 1 / choices
};

// acc, acc_norm, their standard errors and chance from the log-likelihoods of every choice, in
// item order then choice order. Standard errors are NaN for fewer than 2 items.
TaskResult summarize_task(const TaskSet& task, const std::vector<double>& loglik);

// Tokenizes every (item, choice) with `tok`, scores it with the model (score_continuations) and
// summarises. T is the model's trained context (data.seq_len), B the windows per forward.
TaskResult evaluate_task(DeepSeekV3& model, const Tokenizer& tok, const TaskSet& task, int B, int T);

}  // namespace moe
