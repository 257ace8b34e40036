#include <cstdio>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/evaluate.h"
#include "launch/model_io.h"
#include "launch/tasks.h"

namespace moe {
namespace {

// The tokenizer the checkpoint's run trained with (recorded in its metadata), for tasks.
std::unique_ptr<Tokenizer> checkpoint_tokenizer(const CheckpointReader& ckpt) {
  std::string name = ckpt.meta().value("tokenizer", std::string("byte"));
  if (name.empty())
    throw error(ckpt.dir(), ": the checkpoint does not record its tokenizer (trained on a bare Megatron dataset), "
                "so --task cannot tokenize (expected a checkpoint of a run on moe preprocess output)");
  return make_tokenizer(name);
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv, {"checkpoint", "data", "split", "batches", "micro-batch", "threads", "device", "task"}, {"json"});
  if (a.help()) {
    puts("usage: moe eval --checkpoint PATH --data DIR [--split val] [--batches N] [--json] [--task FILE.jsonl]...\n"
         "\n"
         "Mean cross-entropy of a checkpoint on consecutive windows of a split (from its start).\n"
         "PATH is a step-N folder, a 'latest' link, or a checkpoints folder (then every committed\n"
         "checkpoint is evaluated, oldest first, one line each).\n"
         "\n"
         "  --checkpoint PATH   checkpoint or checkpoints folder (required)\n"
         "  --data DIR          output of moe preprocess, or one split folder (required)\n"
         "  --split NAME        split to evaluate (default val)\n"
         "  --batches N         at most N batches (default 0 = the whole split)\n"
         "  --micro-batch B     sequences per batch (default: the run's train.micro_batch)\n"
         "  --threads N         CPU threads (default: all cores)\n"
         "  --device D          auto | cpu | cuda (default auto: the GPU when there is one)\n"
         "  --json              one JSON object per checkpoint: step, loss, perplexity, bits_per_byte, tokens\n"
         "  --task FILE.jsonl   also score a multiple-choice task (repeatable; --data then optional): one JSON\n"
         "                      object per checkpoint and task: n, acc, acc_norm, their stderr, chance");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe eval: unexpected argument '", a.positional()[0], "' (see --help)");
  std::string path = a.required("checkpoint");
  std::vector<TaskSet> tasks;
  for (const std::string& file : a.all("task")) tasks.push_back(load_task(file));
  std::optional<TokenDataset> data;
  if (tasks.empty() || a.has("data")) data = TokenDataset::open(a.required("data"), a.get("split", "val"));
  int64_t batches = a.get_int("batches", 0);
  if (batches < 0) throw error("--batches: ", batches, " (expected >= 0)");
  set_num_threads(int(a.get_int("threads", 0)));
  ComputeScope on_device(*choose_device(a.get("device", "auto"), "--device", nullptr).backend);

  // A checkpoints root holds step-* folders: evaluate each. Anything else names one checkpoint.
  std::vector<std::string> dirs = list_checkpoints(path);
  if (dirs.empty()) dirs = {resolve_checkpoint(path)};
  std::vector<int32_t> token_bytes = data ? token_byte_lengths(*data) : std::vector<int32_t>{};
  for (const std::string& dir : dirs) {
    CheckpointReader ckpt(dir);
    Config cfg = parse_config(ckpt.config_yaml(), dir + "/config.yaml");
    if (data && data->vocab_size() > cfg.model.vocab_size)
      throw error(data->dir(), ": tokenized with vocab_size ", data->vocab_size(), " but the model in ", dir, " has ",
                  cfg.model.vocab_size);
    auto model = load_model(ckpt);
    int B = int(a.get_int("micro-batch", cfg.train.micro_batch));
    if (B < 1) throw error("--micro-batch: ", B, " (expected >= 1)");
    std::unique_ptr<Tokenizer> tok = tasks.empty() ? nullptr : checkpoint_tokenizer(ckpt);
    for (const TaskSet& task : tasks) {
      TaskResult t = evaluate_task(*model, *tok, task, B, cfg.data.seq_len);
      nlohmann::json row = {{"checkpoint", dir}, {"step", ckpt.step()}, {"task", t.name}, {"n", t.n},
                            {"acc", t.acc}, {"acc_stderr", t.acc_stderr}, {"acc_norm", t.acc_norm},
                            {"acc_norm_stderr", t.acc_norm_stderr}, {"chance", t.chance}};
      puts(row.dump().c_str());
      fflush(stdout);
    }
    if (!data) continue;
    EvalResult r = evaluate(*model, *data, token_bytes, B, cfg.data.seq_len, batches);
    if (a.has("json")) {
      // nlohmann writes a NaN (bits per byte of data without a tokenizer) as null.
      nlohmann::json row = {{"checkpoint", dir}, {"step", ckpt.step()}, {"loss", r.loss},
                            {"perplexity", r.perplexity}, {"bits_per_byte", r.bits_per_byte}, {"tokens", r.tokens}};
      puts(row.dump().c_str());
    } else {
      printf("%s | step %lld | loss %.4f | perplexity %.3f | bits/byte %.4f | %lld tokens\n", dir.c_str(),
             (long long)ckpt.step(), r.loss, r.perplexity, r.bits_per_byte, (long long)r.tokens);
    }
    fflush(stdout);
  }
  return 0;
}

}  // namespace moe
