// `moe eval`: every committed checkpoint under each --checkpoint on every --data split, one result
// row each (launch/eval_results.h for the --out file, eval_sweep.h for what is swept,
// eval_table.h for the tables). Under mpirun every rank holds the whole model and evaluates every
// world-th batch (launch/evaluate.h); rank 0 decides what to evaluate and writes the file.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <cstdio>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/eval_results.h"
#include "launch/eval_sweep.h"
#include "launch/eval_table.h"
#include "launch/evaluate.h"
#include "launch/model_io.h"
#include "launch/model_source.h"
#include "launch/tasks.h"
#include "parallel/comm.h"

namespace moe {

namespace {

const char* kUsage =
    "usage: moe eval --checkpoint PATH... --data [NAME=]DIR... [--split val|train] [--out FILE.jsonl]\n"
    "                [--batches N] [--micro-batch B] [--precision fp32|bf16|fp8] [--format F] [--watch]\n"
    "\n"
    "Evaluates every committed checkpoint under each PATH on every dataset: loss, perplexity, bits per\n"
    "byte, top-1 and top-5 next-token accuracy and the expert load, on consecutive windows of the split\n"
    "(from its start). PATH is a step-N folder, a 'latest' link, a checkpoints folder, a run folder, or\n"
    "an export folder of moe export (f32, bf16 or int8 weights).\n"
    "Under mpirun the windows are split across the ranks (each holds the whole model).\n"
    "\n"
    "  --checkpoint PATH   a checkpoint, checkpoints folder, run folder or export (repeatable; required)\n"
    "  --data [NAME=]DIR   output of moe preprocess, or one split folder (repeatable; required unless\n"
    "                      --task is given); NAME defaults to the folder's name\n"
    "  --task FILE.jsonl   a multiple-choice task ({\"context\", \"choices\", \"gold\"} per line), scored by\n"
    "                      each choice's log-likelihood: acc, acc_norm (per byte), their stderr, chance\n"
    "                      (repeatable; one row per checkpoint and task, resumed like the data rows)\n"
    "  --split NAME        split to evaluate (default val)\n"
    "  --out FILE.jsonl    append one JSON row per (checkpoint, dataset, split); rows already there\n"
    "                      (same checkpoint checksum, dataset, split and settings) are skipped\n"
    "  --batches N         at most N batches per dataset (default 0 = the whole split)\n"
    "  --micro-batch B     sequences per batch (default: the run's train.micro_batch)\n"
    "  --precision P       fp32 | bf16 | fp8 GEMMs (default: the checkpoint's train.precision)\n"
    "  --format F          stdout: table (default), csv, markdown, or json (the rows as evaluated)\n"
    "  --json              the same as --format json\n"
    "  --watch             keep evaluating new checkpoints until each run's train.steps is done\n"
    "  --poll S            seconds between looks for new checkpoints with --watch (default 30)\n"
    "  --threads N         CPU threads (default: all cores)\n"
    "  --device D          auto | cpu | cuda (default auto: the GPU when there is one)";

// The job's ranks: an MPI world under mpirun, else this process alone (MPI is not started for one
// process: its start-up costs more than a small sweep).
class Ranks {
 public:
  Ranks() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
      if (std::getenv(v)) {
        comm_.emplace(nullptr, nullptr);
        break;
      }
  }
  const Comm* comm() const { return comm_ ? &*comm_ : nullptr; }
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int size() const { return comm_ ? comm_->size() : 1; }
  bool is_root() const { return rank() == 0; }

  // Rank 0's value on every rank.
  std::string broadcast(std::string s) const {
    if (size() == 1) return s;
    int64_t n = int64_t(s.size());
    comm_->broadcast(&n, sizeof n);
    s.resize(size_t(n));
    if (n) comm_->broadcast(s.data(), n);
    return s;
  }
  bool broadcast(bool b) const {
    if (size() == 1) return b;
    int32_t v = b;
    comm_->broadcast(&v, sizeof v);
    return v != 0;
  }
  // Sums over the ranks in rank order (the same on every rank, whatever order messages arrive in).
  void sum_in_rank_order(double* x, int n) const {
    if (size() == 1) return;
    std::vector<double> all(size_t(n) * size());
    comm_->allgather_bytes(x, all.data(), int64_t(n) * int64_t(sizeof(double)));
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int r = 0; r < size(); ++r) s += all[size_t(r) * n + i];
      x[i] = s;
    }
  }

 private:
  std::optional<Comm> comm_;
};

// A live line on stderr when it is a terminal: checkpoint i/n, dataset, batches, tokens/s, ETA.
class Progress {
 public:
  explicit Progress(bool on) : on_(on) {}
  void start(const std::string& what) {
    what_ = what;
    t0_ = std::chrono::steady_clock::now();
  }
  void update(int64_t done, int64_t total, int64_t windows_per_batch, int64_t tokens_per_batch) {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double eta = done > 0 ? s / double(done) * double(total - done) : 0;
    fprintf(stderr, "\r\033[K%s: batch %lld/%lld (%lld windows each), %.0f tokens/s, ETA %dm%02ds", what_.c_str(),
            (long long)done, (long long)total, (long long)windows_per_batch, s > 0 ? double(done * tokens_per_batch) / s : 0.0,
            int(eta) / 60, int(eta) % 60);
    fflush(stderr);
  }
  void clear() {
    if (on_) fputs("\r\033[K", stderr);
  }

 private:
  bool on_;
  std::string what_;
  std::chrono::steady_clock::time_point t0_;
};

struct EvalFlags {
  std::vector<std::string> paths;
  std::vector<EvalData> data;
  std::vector<TaskSet> tasks;
  std::string split, precision, out;
  int64_t batches = 0, micro_batch = 0;
  bool json = false, watch = false;
  double poll_s = 30;
};

class Sweep {
 public:
  Sweep(const EvalFlags& f, const Ranks& comm) : f_(f), comm_(comm), progress_(comm.is_root() && isatty(2)) {
    std::set<std::string> names;
    for (const EvalData& d : f.data) {
      if (!names.insert(d.name).second) throw error("--data: two datasets are named '", d.name, "' (use NAME=DIR)");
      datasets_.push_back(TokenDataset::open(d.dir, f.split));
      token_bytes_.push_back(token_byte_lengths(datasets_.back()));
    }
    std::set<std::string> task_names;
    for (const TaskSet& t : f.tasks)
      if (!task_names.insert(t.name).second)
        throw error("--task: two tasks are named '", t.name, "' (", t.path, "; rows are keyed by the file's name)");
    if (!f.out.empty()) {
      results_ = ResultsFile::open(f.out, comm.is_root());
      if (comm.is_root() && !results_.note().empty()) fprintf(stderr, "note: %s\n", results_.note().c_str());
    }
    done_steps_.resize(f.paths.size(), -1);
    last_steps_.resize(f.paths.size(), -1);
  }

  // One look for checkpoints; evaluates what is new. True when --watch has nothing more to wait for.
  bool pass(bool first) {
    std::vector<std::pair<size_t, std::string>> found = discover();
    std::vector<std::pair<size_t, SweepCheckpoint>> todo;
    for (auto& [path_i, dir] : found) {
      if (!seen_.insert(dir).second) continue;
      ++found_;
      SweepCheckpoint c;
      Config cfg;
      std::string problem;
      try {
        c = read_sweep_checkpoint(dir);
        cfg = parse_config(c.config_yaml, dir + "/config.yaml");
      } catch (const Error& e) {
        problem = e.what();
      }
      if (!comm_.broadcast(problem.empty())) {
        warn("skipping checkpoint " + dir + ": " + problem);
        ++unreadable_;
        continue;
      }
      last_steps_[path_i] = c.is_export ? c.step : cfg.train.steps;  // an export is final: nothing to wait for
      check_data(c, cfg);  // the same files on every rank: all ranks throw or none
      todo.emplace_back(path_i, std::move(c));
    }
    // Conflicting settings in --out end the sweep before anything runs (results.done throws).
    for (auto& [path_i, c] : todo) (void)pending(c);
    if (first && comm_.is_root()) {
      int64_t rows = 0, already = 0;
      for (auto& [path_i, c] : todo) rows += int64_t(pending(c).size());
      already = int64_t(todo.size() * units()) - rows;
      const std::string tasks = f_.tasks.empty() ? "" : " + " + std::to_string(f_.tasks.size()) + " tasks";
      fprintf(stderr, "eval: found %lld checkpoints (%lld unreadable: skipped) x %zu datasets%s: %lld rows to evaluate%s\n",
              (long long)found_, (long long)(unreadable_ + not_committed_), datasets_.size(), tasks.c_str(),
              (long long)rows, already_in(already).c_str());
    }
    for (size_t k = 0; k < todo.size(); ++k) {
      auto& [path_i, c] = todo[k];
      if (!evaluate_checkpoint(c, k + 1, todo.size())) ++unreadable_;
      // A corrupt last checkpoint ends a --watch too: nothing later will come.
      done_steps_[path_i] = std::max(done_steps_[path_i], c.step);
    }
    bool finished = true;
    for (size_t i = 0; i < f_.paths.size(); ++i)
      finished = finished && last_steps_[i] >= 0 && done_steps_[i] >= last_steps_[i];
    return finished;
  }

  void summary() const {
    if (!comm_.is_root()) return;
    fprintf(stderr, "eval: %lld checkpoints found; %lld rows evaluated%s, %lld checkpoints skipped (unreadable or "
            "not committed)\n", (long long)found_, (long long)evaluated_,
            f_.out.empty() ? "" : (", " + std::to_string(skipped_) + " skipped (already in " + f_.out + ")").c_str(),
            (long long)(unreadable_ + not_committed_));
  }
  const std::vector<nlohmann::json>& rows() const { return rows_; }

 private:
  std::string already_in(int64_t rows) const {
    return f_.out.empty() ? "" : ", " + std::to_string(rows) + " already in " + f_.out;
  }
  void warn(const std::string& what) const {
    if (comm_.is_root()) fprintf(stderr, "warning: %s\n", what.c_str());
  }

  // Rank 0 lists the checkpoints (a training job may commit one at any moment); every rank gets
  // the same list.
  std::vector<std::pair<size_t, std::string>> discover() {
    nlohmann::json list = nlohmann::json::array();
    if (comm_.is_root()) {
      try {
        for (size_t i = 0; i < f_.paths.size(); ++i) {
          std::vector<std::string> warnings;
          for (const std::string& dir : find_checkpoints(f_.paths[i], warnings, f_.watch)) list.push_back({i, dir});
          for (const std::string& w : warnings)
            if (warned_.insert(w).second) {
              warn(w);
              ++not_committed_;
              ++found_;
            }
        }
      } catch (const Error& e) {
        list = {{"error", e.what()}};  // every rank fails with it, none waits for the others
      }
    }
    list = nlohmann::json::parse(comm_.broadcast(list.dump()));
    if (list.is_object()) throw Error(list["error"].get<std::string>());
    std::vector<std::pair<size_t, std::string>> out;
    for (const auto& e : list) out.emplace_back(e[0].get<size_t>(), e[1].get<std::string>());
    return out;
  }

  // A dataset made with another tokenizer than the checkpoint's model learned is an error, not a
  // number: the ids mean other things.
  void check_data(const SweepCheckpoint& c, const Config& cfg) const {
    for (size_t d = 0; d < datasets_.size(); ++d) {
      const TokenDataset& data = datasets_[d];
      if (!c.tokenizer_hash.empty() && !data.tokenizer_hash().empty() && c.tokenizer_hash != data.tokenizer_hash())
        throw error(data.dir(), ": tokenized with '", data.tokenizer_name(), "' but ", c.dir, " was trained on '",
                    c.tokenizer, "' (another tokenizer: the token ids do not match)");
      if (data.vocab_size() > cfg.model.vocab_size)
        throw error(data.dir(), ": tokenized with vocab_size ", data.vocab_size(), " but the model in ", c.dir,
                    " has ", cfg.model.vocab_size);
    }
  }

  EvalSettings settings(const Config& cfg) const {
    return {f_.batches, f_.micro_batch > 0 ? f_.micro_batch : cfg.train.micro_batch, cfg.data.seq_len,
            f_.precision.empty() ? cfg.train.precision : f_.precision};
  }
  // Units of work per checkpoint: the datasets, then the tasks (split "task" in their rows' keys).
  size_t units() const { return datasets_.size() + f_.tasks.size(); }
  bool is_task(size_t u) const { return u >= datasets_.size(); }
  const std::string& unit_name(size_t u) const {
    return is_task(u) ? f_.tasks[u - datasets_.size()].name : f_.data[u].name;
  }
  EvalKey key(const SweepCheckpoint& c, size_t u) const {
    return {c.checksum, c.step, unit_name(u), is_task(u) ? std::string("task") : f_.split};
  }

  // The datasets this checkpoint still needs (throws on a conflicting row in --out).
  std::vector<size_t> pending(const SweepCheckpoint& c) const {
    const EvalSettings s = settings(parse_config(c.config_yaml, c.dir + "/config.yaml"));
    std::vector<size_t> out;
    for (size_t u = 0; u < units(); ++u)
      if (!results_.done(key(c, u), s)) out.push_back(u);
    return out;
  }

  void emit(const nlohmann::json& row) {
    rows_.push_back(row);
    if (f_.json && comm_.is_root()) {
      puts(row.dump().c_str());
      fflush(stdout);
    }
  }

  // False when the checkpoint cannot be read (a warning names it; the sweep goes on).
  bool evaluate_checkpoint(const SweepCheckpoint& c, size_t index, size_t count) {
    const Config cfg = parse_config(c.config_yaml, c.dir + "/config.yaml");
    const EvalSettings s = settings(cfg);
    const std::vector<size_t> todo = pending(c);
    for (size_t d = 0; d < units(); ++d)
      if (std::find(todo.begin(), todo.end(), d) == todo.end()) {
        ++skipped_;
        for (const nlohmann::json& row : results_.rows())
          if (row_key(row) == key(c, d) && row_settings(row) == s) emit(row);
      }
    if (todo.empty()) return true;
    std::unique_ptr<DeepSeekV3> model;
    std::string problem;
    try {
      if (c.is_export) {
        model = load_model(open_model_source(c.dir));
      } else {
        CheckpointReader ckpt(c.dir);
        if (comm_.is_root()) ckpt.verify();  // a corrupt checkpoint is skipped, not evaluated
        model = load_model(ckpt);
      }
    } catch (const Error& e) {
      problem = e.what();
    }
    if (!comm_.broadcast(problem.empty()) || !model) {
      warn("skipping checkpoint " + c.dir + ": " + (problem.empty() ? "unreadable on another rank" : problem));
      return false;
    }
    model->set_precision(parse_precision(s.precision));
    for (size_t d : todo) {
      if (is_task(d)) {
        evaluate_task_row(*model, c, d, s);
        continue;
      }
      EvalOptions opt;
      opt.B = int(s.micro_batch);
      opt.T = int(s.seq_len);
      opt.batches = s.batches;
      opt.rank = comm_.rank();
      opt.world = comm_.size();
      opt.reduce = [this](double* x, int n) { comm_.sum_in_rank_order(x, n); };
      opt.accuracy = opt.expert_load = true;
      opt.document_mask = cfg.data.document_mask;  // as the run evaluated itself
      char what[512];
      snprintf(what, sizeof what, "[%zu/%zu] %s step %lld on %s", index, count, c.run.c_str(), (long long)c.step,
               f_.data[d].name.c_str());
      progress_.start(what);
      opt.progress = [&](int64_t done, int64_t total) { progress_.update(done, total, opt.B, int64_t(opt.B) * opt.T); };
      const EvalResult r = evaluate(*model, datasets_[d], token_bytes_[d], opt);
      progress_.clear();
      record(c, d, s,
             {{"data_dir", f_.data[d].dir},
              {"loss", r.loss},
              {"perplexity", r.perplexity},
              {"bits_per_byte", r.bits_per_byte},
              {"top1", r.top1},
              {"top5", r.top5},
              {"tokens", r.tokens},
              {"windows", r.windows},
              {"expert_load_max_mean", r.load_max_mean},
              {"expert_load_max_mean_worst", r.load_max_mean_worst},
              {"ranks", comm_.size()},
              {"seconds", r.seconds},
              {"windows_per_s", r.seconds > 0 ? double(r.windows) / r.seconds : 0.0}});
    }
    return true;
  }

  // Every rank scores the whole task (the same numbers); rank 0 writes the row.
  void evaluate_task_row(DeepSeekV3& model, const SweepCheckpoint& c, size_t u, const EvalSettings& s) {
    if (c.tokenizer.empty())
      throw error(c.dir, ": the checkpoint does not record its tokenizer (trained on a bare Megatron dataset), so ",
                  "--task cannot tokenize (expected a checkpoint of a run on moe preprocess output)");
    const auto t0 = std::chrono::steady_clock::now();
    const std::unique_ptr<Tokenizer> tok = make_tokenizer(c.tokenizer);
    const TaskResult t = evaluate_task(model, *tok, f_.tasks[u - datasets_.size()], int(s.micro_batch),
                                       int(s.seq_len));
    record(c, u, s,
           {{"task", t.name},
            {"task_file", f_.tasks[u - datasets_.size()].path},
            {"n", t.n},
            {"acc", t.acc},
            {"acc_stderr", t.acc_stderr},
            {"acc_norm", t.acc_norm},
            {"acc_norm_stderr", t.acc_norm_stderr},
            {"chance", t.chance},
            {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}});
  }

  // A finished row: the run, checkpoint, key and settings, then `fields`; into --out (rank 0
  // writes it) and the output.
  void record(const SweepCheckpoint& c, size_t u, const EvalSettings& s, const nlohmann::json& fields) {
    nlohmann::json row = {{"run", c.run}, {"checkpoint", c.dir}};
    set_key_fields(row, key(c, u), s);
    row["tokens_seen"] = c.tokens_seen;
    row.update(fields);
    if (!f_.out.empty()) {
      if (comm_.is_root()) results_.append(row);
      else results_.remember(row);
    }
    ++evaluated_;
    emit(row);
  }

  const EvalFlags& f_;
  const Ranks& comm_;
  Progress progress_;
  std::vector<TokenDataset> datasets_;
  std::vector<std::vector<int32_t>> token_bytes_;
  ResultsFile results_;
  std::set<std::string> seen_, warned_;
  std::vector<int64_t> done_steps_, last_steps_;  // per --checkpoint path
  std::vector<nlohmann::json> rows_;
  int64_t found_ = 0, evaluated_ = 0, skipped_ = 0, unreadable_ = 0, not_committed_ = 0;
};

}  // namespace

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv,
         {"checkpoint...", "data...", "task...", "split", "out", "batches", "micro-batch", "precision", "format", "poll",
          "threads", "device"},
         {"json", "watch"});
  if (a.help()) {
    puts(kUsage);
    return 0;
  }
  if (!a.positional().empty()) throw error("moe eval: unexpected argument '", a.positional()[0], "' (see --help)");
  EvalFlags f;
  f.paths = a.all("checkpoint");
  if (f.paths.empty()) throw error("missing required flag --checkpoint (see --help)");
  for (const std::string& file : a.all("task")) f.tasks.push_back(load_task(file));
  if (a.all("data").empty() && f.tasks.empty()) throw error("missing required flag --data (see --help)");
  for (const std::string& v : a.all("data")) f.data.push_back(parse_data_flag(v));
  f.split = a.get("split", "val");
  f.out = a.get("out");
  f.batches = a.get_int("batches", 0);
  if (f.batches < 0) throw error("--batches: ", f.batches, " (expected >= 0)");
  f.micro_batch = a.get_int("micro-batch", 0);
  if (a.has("micro-batch") && f.micro_batch < 1) throw error("--micro-batch: ", f.micro_batch, " (expected >= 1)");
  if (a.has("precision")) f.precision = precision_name(parse_precision_flag(a.get("precision"), "--precision"));
  const std::string format = a.get("format", a.has("json") ? "json" : "table");
  if (a.has("json") && format != "json") throw error("--json and --format ", format, ": pick one");
  f.json = format == "json";
  const TableFormat table = f.json ? TableFormat::Table : parse_table_format(format);
  f.watch = a.has("watch");
  f.poll_s = a.get_double("poll", 30);
  if (f.poll_s <= 0) throw error("--poll: ", f.poll_s, " (expected > 0 seconds)");

  Ranks comm;
  set_num_threads(int(a.get_int("threads", 0)));
  ComputeScope on_device(*choose_device(a.get("device", "auto"), "--device", comm.comm()).backend);
  Sweep sweep(f, comm);
  for (bool first = true;; first = false) {
    const bool finished = sweep.pass(first);
    if (!f.watch || finished) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(f.poll_s));
  }
  sweep.summary();
  if (!f.json && comm.is_root()) fputs(format_results(sweep.rows(), table).c_str(), stdout);
  return 0;
}

}  // namespace moe
