#include "launch/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <unistd.h>

#include "checkpoints/async_save.h"
#include "checkpoints/checkpoint.h"
#include "data_pipeline/mixture.h"
#include "data_pipeline/out_file.h"
#include "data_pipeline/shards.h"
#include "framework/error.h"
#include "framework/gemm.h"
#include "framework/metrics.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "launch/data_sources.h"
#include "launch/device.h"
#include "launch/gemm_peak.h"
#include "launch/evaluate.h"
#include "launch/expert_report.h"
#include "launch/model_io.h"
#include "launch/numeric_guard.h"
#include "launch/train_sample.h"
#include "model/model.h"
#include "framework/optimizer.h"
#include "parallel/comm.h"
#include "parallel/comm_stats.h"
#include "parallel/distributed_model.h"
#include "parallel/node.h"
#include "parallel/train_step.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

std::vector<const TokenDataset*> pointers(const std::vector<TokenDataset>& v) {
  std::vector<const TokenDataset*> out;
  for (const TokenDataset& d : v) out.push_back(&d);
  return out;
}

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// metrics.jsonl tells the history that led to the current state. A run that died after its last
// checkpoint logged steps the resumed run will log again, so on start every row after the step we
// start from is dropped (and a line torn by a kill); so after a rollback. Returns the rows kept. The
// file is rewritten and renamed into place, so a crash here loses nothing.
int64_t keep_metrics_up_to(const fs::path& path, int64_t step,
                           const char* why = "logged by a run that ended before saving them") {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string line, kept;
  int64_t rows = 0, dropped = 0;
  while (std::getline(in, line)) {
    nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    bool keep = in.good() && row.is_object() && row.contains("step") && row["step"].is_number_integer() &&
                row["step"].get<int64_t>() <= step;  // !good(): the last line had no newline
    if (!keep) {
      ++dropped;
      continue;
    }
    kept += line + "\n";
    ++rows;
  }
  if (dropped == 0) return rows;
  write_file_atomic(path.string(), kept);  // errors name the file and the reason (disk full, read-only)
  printf("%s: dropped %lld row(s) after step %lld (%s)\n", path.string().c_str(), (long long)dropped,
         (long long)step, why);
  return rows;
}

// The model keys a checkpoint's weights depend on differ (the router's loss coefficients and bias
// rate are training settings): the first differing key as "model.x: A -> B", or "" if none.
std::string model_difference(const ModelConfig& saved, const ModelConfig& now) {
  Config a, b;
  a.model = saved;
  b.model = now;
  for (Config* c : {&a, &b}) {
    c->model.router.bias_update_rate = c->model.router.aux_loss_coef = c->model.router.z_loss_coef = 0;
  }
  std::istringstream ya(config_to_yaml(a)), yb(config_to_yaml(b));
  std::vector<std::string> path;  // the sections the current line is in
  for (std::string la, lb; std::getline(ya, la) && std::getline(yb, lb);) {
    const size_t indent = la.find_first_not_of(' '), colon = la.find(':');
    const std::string name = la.substr(indent, colon - indent), value = la.substr(colon + 1);
    path.resize(indent / 2);
    if (value.empty()) {
      path.push_back(name);
      continue;
    }
    if (la == lb) continue;
    std::string key;
    for (const std::string& p : path) key += p + ".";
    return key + name + ":" + value + " ->" + lb.substr(lb.find(':') + 1);
  }
  return "";
}

std::string fmt_duration(double s) {
  char buf[32];
  int h = int(s / 3600), m = int(std::fmod(s, 3600) / 60), sec = int(std::fmod(s, 60));
  if (h > 0) snprintf(buf, sizeof buf, "%dh%02dm", h, m);
  else snprintf(buf, sizeof buf, "%dm%02ds", m, sec);
  return buf;
}

class Trainer {
 public:
  Trainer(const Config& cfg, Comm& comm, DeviceChoice device, Clock::time_point process_start)
      : cfg_(cfg), comm_(comm), device_(std::move(device)), dm_(comm, cfg, device_.groups),
        data_(open_data_sources(cfg)), sampler_(pointers(data_.train), data_.weights, cfg.data.seq_len, cfg.run.seed),
        experts_(moe_block_indices()), guard_(cfg.train, cfg.run.out_dir),
        spikes_(cfg.train.spike_window, cfg.train.spike_zscore), process_start_(process_start) {
    for (const TokenDataset& v : data_.val) token_bytes_.push_back(token_byte_lengths(v));
    const size_t B = size_t(cfg.train.micro_batch), T = size_t(cfg.data.seq_len);
    window_.resize(B * (T + 1));
    ids_.resize(B * T);
    targets_.resize(B * T);
    if (cfg.data.document_mask) doc_start_.resize(B * T);
    if (data_.mixture) source_.resize(B);
    ckpt_root_ = (fs::path(cfg.run.out_dir) / "checkpoints").string();
    if (cfg.train.sample_every > 0) open_sample_tokenizer();
  }

  ~Trainer() {
    if (rank_log_) std::fclose(rank_log_);
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  int run() {
    const TrainConfig& t = cfg_.train;
    start_step_ = resume();
    if (!guard_.skips().ranges().empty())
      start_notes_.push_back("skipping " + std::to_string(guard_.skips().samples()) + " sample(s) in " +
                             std::to_string(guard_.skips().ranges().size()) + " range(s), as recorded in " +
                             (guard_.has_file() ? guard_.file() : "") +
                             (guard_.has_file() && skips_in_checkpoint_ ? " and " : "") +
                             (skips_in_checkpoint_ ? "the checkpoint's meta.json" : ""));
    saver_ = std::make_unique<AsyncSaver>(ckpt_root_, Retention(cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every),
                                          comm_.size());
    open_logs();
    InjectedFaults faults = InjectedFaults::from_env();
    auto batch = [&](int64_t step, int micro) { return sample(step, micro); };
    // A save's snapshot may still be copying the state in the background: the optimizer waits for it.
    auto wait_snapshot = [&] { copy_wait_s_ += saver_->wait_snapshot(); };
    for (int64_t step = start_step_; step < t.steps; ++step) {
      const InjectedFaults::AtStep fault = faults.take(comm_.rank(), step);
      if (fault.crash) throw error("injected fault at step ", step, " (MOE_FAULT_INJECT)");
      const auto step_start = Clock::now();
      const int64_t done = step + 1;
      auto log = [&](const StepStats& s) {
        if (s.skipped) return;  // the guard logs it below
        if (comm_.is_root()) experts_.add(*s.expert_load);
        log_step(done, s, seconds_since(step_start));
      };
      reset_comm_counts();  // what this step communicates, for its metrics row
      const StepStats st = train_step(dm_, cfg_, step, batch, wait_snapshot, log, fault.step);
      if (st.skipped && bad_step(done, st)) {
        step = roll_back() - 1;  // the loop's ++step: the checkpoint's step runs next
        continue;
      }
      if (!st.skipped) good_step(done, st);
      const bool last = done == t.steps;
      if ((t.eval_every > 0 && done % t.eval_every == 0) || last) run_eval(done);
      const int64_t report_every = t.expert_report_every > 0 ? t.expert_report_every : t.eval_every;
      if ((report_every > 0 && done % report_every == 0) || last) report_experts(done);
      if (t.sample_every > 0 && (done % t.sample_every == 0 || last)) sample(done);
      // A background save that finished is reported here; one that failed ends the run (exit 2).
      report_save(saver_->poll());
      const Stop stop = agreed_stop(done);
      // The last save and a save on a stop are on disk before the process exits.
      const bool periodic = cfg_.checkpoint.every > 0 && done % cfg_.checkpoint.every == 0;
      if (fault.stall_save) saver_->stall_next_write(3600);  // a test's hung filesystem
      if ((periodic && !guard_.holding_saves()) || last || stop.any()) save(done, last || stop.any());
      else if (periodic && comm_.is_root())
        printf("checkpoint step %lld postponed: non-finite steps in a row may end in a rollback to the one before\n",
               (long long)done);
      if (stop.any() && !last) {
        if (comm_.is_root()) print_stop(stop, done);
        return 0;
      }
    }
    if (start_step_ >= t.steps && comm_.is_root())
      printf("nothing to do: checkpoint is at step %lld, train.steps is %lld\n", (long long)start_step_,
             (long long)t.steps);
    return 0;
  }

 private:
  int64_t global_batch() const { return int64_t(cfg_.train.micro_batch) * cfg_.train.grad_accum * comm_.size(); }
  int64_t tokens_per_step() const { return global_batch() * cfg_.data.seq_len; }

  // The run's header on rank 0 (and its config.yaml and metrics.jsonl), the other ranks' own logs
  // with run.rank_logs, and the MFU denominator.
  // "replica R, " in a rank's coordinates with HSDP, nothing without.
  std::string replica_label() const {
    return mesh_.replicate() > 1 ? "replica " + std::to_string(mesh_.replica()) + ", " : std::string();
  }
  void open_logs() {
    const int T = cfg_.data.seq_len, W = comm_.size();
    // Where each rank runs (collective), for checking a multi-node launch: rank 0's line in the
    // header, the others' at the top of their rank logs.
    std::vector<std::string> nodes;
    std::string placement;
    if (W > 1) {
      int local_size = 0;
      const int local = local_rank(comm_, &local_size);
      nodes = node_names(comm_);
      placement = "rank " + std::to_string(comm_.rank()) + " on " + nodes[size_t(comm_.rank())] + " (local rank " +
                  std::to_string(local) + " of " + std::to_string(local_size) + ", " + replica_label() + "dp " +
                  std::to_string(mesh_.dp_rank()) + ", ep " + std::to_string(mesh_.ep_rank()) + ")";
    }
    if (comm_.is_root()) {
      fs::create_directories(cfg_.run.out_dir);
      write_file_atomic((fs::path(cfg_.run.out_dir) / "config.yaml").string(), config_to_yaml(cfg_));
      open_jsonl_logs(start_step_, "logged by a run that ended before saving them");
      ParamCounts pc = count_params(cfg_.model);
      const std::string replicas =
          mesh_.replicate() > 1 ? std::to_string(mesh_.replicate()) + " replicas (HSDP) x " : std::string();
      printf("moe train: %s | %.2fM params (%.2fM active) | %d rank(s) (%sdp %d x ep %d) x %d thread(s) | global batch "
             "%lld x %d tokens | %s | %s\n",
             cfg_.run.name.c_str(), pc.total / 1e6, pc.active / 1e6, W, replicas.c_str(), mesh_.dp(), mesh_.ep(),
             num_threads(),
             (long long)global_batch(), T, precision_label(model_.precision(), device_).c_str(), device_.description.c_str());
      if (W > 1) printf("%s | %d ranks on %d node(s)\n", placement.c_str(), W, count_nodes(nodes));
      for (const std::string& line : replica_placement(nodes, mesh_.replicate())) printf("%s\n", line.c_str());
      double total_weight = 0;
      for (double w : data_.weights) total_weight += w;
      for (int s = 0; s < sampler_.sources(); ++s) {
        const double share = 100 * data_.weights[size_t(s)] / total_weight;
        const std::string mix = data_.mixture ? data_.names[size_t(s)] + " " + std::to_string(std::lround(share)) + "%, " : "";
        printf("data: %s (%s%lld train tokens, %lld val tokens, %lld windows/epoch)%s\n", data_.paths[size_t(s)].c_str(),
               mix.c_str(), (long long)data_.train[size_t(s)].num_tokens(),
               (long long)data_.val[size_t(s)].num_tokens(), (long long)sampler_.source(s).windows_per_epoch(),
               cfg_.data.document_mask && s == 0 ? " | document mask" : "");
        if (data_.val[size_t(s)].num_tokens() < T + 1)
          printf("warning: %s/val has %lld tokens, fewer than seq_len+1; evaluation is skipped\n",
                 data_.paths[size_t(s)].c_str(), (long long)data_.val[size_t(s)].num_tokens());
      }
      if (start_step_ > 0) printf("resumed from %s at step %lld\n", resumed_from_.c_str(), (long long)start_step_);
      for (const std::string& note : start_notes_) printf("%s\n", note.c_str());
      fflush(stdout);
    }
    if (!comm_.is_root() && cfg_.run.rank_logs) {
      fs::path dir = fs::path(cfg_.run.out_dir) / "logs";
      fs::create_directories(dir);
      fs::path path = dir / ("rank-" + std::to_string(comm_.rank()) + ".log");
      rank_log_ = std::fopen(path.c_str(), start_step_ > 0 ? "a" : "w");
      if (!rank_log_) throw error(path.string(), ": cannot open for writing (run.rank_logs)");
      fprintf(rank_log_, "%s\n", placement.c_str());
    }
    // On the CPU, MFU is against this machine's GEMM ceiling in the precision the GEMMs run.
    peak_gflops_ = device_.peak_flops > 0 ? device_.peak_flops / 1e9 : cpu_peak_gflops(model_.precision());
    run_start_ = log_start_ = Clock::now();
  }

  // Rank 0: metrics.jsonl and samples.jsonl without their rows after `step`, open for appending.
  void open_jsonl_logs(int64_t step, const char* why) {
    const fs::path dir(cfg_.run.out_dir);
    metrics_.reset();  // closed before it is rewritten
    metrics_rows_ = keep_metrics_up_to(dir / "metrics.jsonl", step, why);
    metrics_ = std::make_unique<MetricsLog>((dir / "metrics.jsonl").string());
    if (cfg_.train.sample_every > 0) {
      samples_.reset();
      keep_metrics_up_to(dir / "samples.jsonl", step, why);
      samples_ = std::make_unique<MetricsLog>((dir / "samples.jsonl").string());
    }
  }

  // This rank's micro-batch `micro` of a step: global samples step·G + (micro·W + rank)·B onwards,
  // so a batch is a function of (seed, step) whatever the layout (and of the skip list after a
  // rollback: positions in the stream with those samples cut out).
  MicroBatch sample(int64_t step, int micro) {
    const int B = cfg_.train.micro_batch, T = cfg_.data.seq_len;
    const int64_t first = step * global_batch() + (int64_t(micro) * comm_.size() + comm_.rank()) * B;
    int filled = 0;  // the samples a rollback skipped are cut out of the stream (one run without any)
    for (const auto& [begin, end] : guard_.skips().read(first, B)) {
      sampler_.fill(begin, int(end - begin), window_.data() + size_t(filled) * (T + 1),
                    doc_start_.empty() ? nullptr : doc_start_.data() + size_t(filled) * T,
                    source_.empty() ? nullptr : source_.data() + filled);
      filled += int(end - begin);
    }
    for (int b = 0; b < B; ++b) {
      std::copy_n(window_.begin() + b * (T + 1), T, ids_.begin() + b * T);
      std::copy_n(window_.begin() + b * (T + 1) + 1, T, targets_.begin() + b * T);
    }
    MicroBatch mb{ids_.data(), targets_.data()};
    if (!doc_start_.empty()) mb.doc_start = doc_start_.data();
    if (!source_.empty()) mb.source = source_.data(), mb.sources = sampler_.sources();
    return mb;
  }

  // After the optimizer step `done` (1-based), before the bias update: every log_every steps the
  // step line, the rank logs and a metrics.jsonl row.
  void log_step(int64_t done, const StepStats& s, double step_time) {
    const TrainConfig& t = cfg_.train;
    log_tokens_ += tokens_per_step();
    if (done % t.log_every != 0 && done != t.steps) return;
    double dt = seconds_since(log_start_), tps = log_tokens_ / dt;
    double gflops = tps * flops_per_token(cfg_.model, cfg_.data.seq_len) / 1e9 / comm_.size();
    double eta = (t.steps - done) * dt / double(log_tokens_ / tokens_per_step());
    if (rank_log_) {
      fprintf(rank_log_, "step %lld | rank %d (%sdp %d, ep %d) | local loss %.4f | step %.3f s | state %.1f MiB | rss %.0f MiB\n",
              (long long)done, comm_.rank(), replica_label().c_str(), mesh_.dp_rank(), mesh_.ep_rank(), s.local_loss, step_time,
              fsdp_.memory().shard_bytes / 1048576.0, peak_rss_mib());
      fflush(rank_log_);
    }
    if (comm_.is_root()) {
      const Tensor& load = *s.expert_load;
      double load_ratio = max_mean_load(load);
      nlohmann::json load_rows = nlohmann::json::array();  // tokens per expert, one row per MoE layer
      for (int64_t l = 0; l < load.dim(0); ++l)
        load_rows.push_back(std::vector<float>(load.f32() + l * load.dim(1), load.f32() + (l + 1) * load.dim(1)));
      // Memory: the device's peak reserved memory on a GPU, the process's peak RSS on the CPU.
      const double device_mib = device_peak_mib(device_);
      const bool mtp = cfg_.model.mtp_depth > 0;
      char mtp_part[48] = "";
      if (mtp) snprintf(mtp_part, sizeof mtp_part, " | mtp loss %.4f", s.mtp_loss);
      printf("step %6lld/%lld | loss %.4f%s | acc %.1f%% | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%% | mem %.0f MiB | load max/mean %.2f | ETA %s\n",
             (long long)done, (long long)t.steps, s.loss, mtp_part, 100.0 * s.accuracy, s.lr, s.grad_norm, tps, 100.0 * gflops / peak_gflops_,
             device_mib > 0 ? device_mib : peak_rss_mib(), load_ratio, fmt_duration(eta).c_str());
      fflush(stdout);
      ShardMemory mem = fsdp_.memory();
      nlohmann::json row = {{"step", done}, {"state_mib", mem.shard_bytes / 1048576.0},
                   {"state_fraction", double(mem.shard_bytes) / double(mem.full_bytes)},
                   {"gathered_peak_mib", mem.peak_gathered_bytes / 1048576.0},
                   {"expert_load_per_ep_rank", load_per_ep_rank(load)}, {"loss", s.loss}, {"accuracy", s.accuracy},
                   {"aux_loss", s.aux_loss},
                   {"z_loss", s.z_loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                   {"tokens", done * tokens_per_step()}, {"tokens_per_s", tps}, {"step_s", step_time},
                   {"gflops_per_rank", gflops}, {"mfu", gflops / peak_gflops_},
                   {"peak_rss_mib", peak_rss_mib()}, {"peak_device_mib", device_mib},
                   {"expert_load_max_mean", load_ratio},
                   {"expert_load", load_rows},
                   {"elapsed_s", seconds_since(run_start_)}};
      if (data_.mixture) row["source_loss"] = per_source(s.source_loss);
      if (mtp) row["mtp_loss"] = s.mtp_loss;
      if (skipped_steps_ > 0) row["skipped_steps"] = skipped_steps_;
      if (comm_.size() > 1) row["comm"] = comm_counts_json(comm_counts());  // rank 0's, this step
      log_metrics(row);
    }
    log_start_ = Clock::now();
    log_tokens_ = 0;
  }

  // Why this invocation stops after step `done`, agreed by all ranks (they must stop at the same
  // step boundary): a signal any rank caught (SIGTERM if they differ), train.time_limit passed on
  // any rank, or train.stop_after steps run. One all-reduce per step, as before either limit existed.
  struct Stop {
    int signal = 0;
    bool time_limit = false, stop_after = false;
    bool any() const { return signal || time_limit || stop_after; }
  };
  Stop agreed_stop(int64_t done) const {
    const TrainConfig& t = cfg_.train;
    double flags[2] = {double(g_stop_signal),
                       t.time_limit > 0 && seconds_since(process_start_) >= 60.0 * t.time_limit ? 1.0 : 0.0};
    comm_.allreduce_sum(flags, 2);
    Stop s;
    s.signal = flags[0] > 0 ? (g_stop_signal ? int(g_stop_signal) : SIGTERM) : 0;
    s.time_limit = flags[1] > 0;
    s.stop_after = t.stop_after > 0 && done - start_step_ >= t.stop_after;
    return s;
  }

  void print_stop(const Stop& stop, int64_t done) const {
    const long long d = (long long)done, steps = (long long)cfg_.train.steps;
    if (stop.signal)
      printf("stopping on signal %d after step %lld (checkpoint saved)\n", stop.signal, d);
    else if (stop.time_limit)
      printf("stopping at the time limit after step %lld of %lld: %s elapsed, train.time_limit is %g min "
             "(checkpoint saved; run again to continue)\n",
             d, steps, fmt_duration(seconds_since(process_start_)).c_str(), cfg_.train.time_limit);
    else
      printf("stopping after %lld step(s) of this run (train.stop_after) at step %lld of %lld (checkpoint saved; "
             "run again to continue)\n",
             (long long)(done - start_step_), d, steps);
    fflush(stdout);
  }

  // Block index of each MoE layer (the rows of the expert loads).
  // The block index of every row of expert_load(): the main MoE blocks, then the MTP modules' MoE
  // blocks (Hugging Face layer L+k-1 for module k).
  std::vector<int> moe_block_indices() const {
    std::vector<int> out;
    const int L = int(model_.blocks().size());
    for (int l = 0; l < L; ++l)
      if (model_.blocks()[size_t(l)].is_moe) out.push_back(l);
    for (int k = 0; k < int(model_.mtp_modules().size()); ++k)
      if (model_.mtp_modules()[size_t(k)].block.is_moe) out.push_back(L + k);
    return out;
  }

  // Rank 0 prints the top experts of every MoE layer since the previous report and writes the
  // full counts to metrics.jsonl (the loads were reduced over ranks in the step).
  void report_experts(int64_t step) {
    if (!comm_.is_root() || experts_.steps() == 0 || model_.moe_layers() == 0) return;
    for (const std::string& line : experts_.lines()) printf("%s\n", line.c_str());
    fflush(stdout);
    nlohmann::json row = experts_.json();
    row["step"] = step;
    log_metrics(row);
    experts_.reset();
  }

  // train.sample_every needs the tokenizer the data was made with; a prompt it cannot encode for
  // this model fails here, before any step.
  void open_sample_tokenizer() {
    const std::string& name = data_.train[0].tokenizer_name();
    if (name.empty())
      throw error(cfg_.source, ": train.sample_every is ", cfg_.train.sample_every, " but ", data_.train[0].dir(),
                  " records no tokenizer (expected data made by moe preprocess, or sample_every 0)");
    sample_tok_ = make_tokenizer(name);
    for (uint32_t id : sample_tok_->encode(cfg_.train.sample_prompt))
      if (int64_t(id) >= cfg_.model.vocab_size)
        throw error(cfg_.source, ": train.sample_prompt encodes to token id ", id, ", outside model.vocab_size ",
                    cfg_.model.vocab_size, " (expected a prompt the data's tokenizer maps into the vocabulary)");
  }

  // Collective: every rank hands its shards to rank 0, which generates from a model of its own
  // (launch/train_sample.h), prints the text and appends it to samples.jsonl.
  void sample(int64_t step) {
    auto t0 = Clock::now();
    std::unique_ptr<DeepSeekV3> full =
        gather_model(comm_, cfg_.model, model_.params(), fsdp_.pieces(), model_.precision());
    if (!full) return;
    SampleOptions opt;
    opt.prompt = cfg_.train.sample_prompt;
    opt.tokens = cfg_.train.sample_tokens;
    opt.temperature = cfg_.train.sample_temperature;
    opt.seed = cfg_.run.seed;
    opt.context = cfg_.data.seq_len;
    const std::string text = generate_sample(*full, *sample_tok_, opt);
    // Control bytes other than newlines and tabs (an early byte-level model emits any byte) are
    // shown as '?' on the console; samples.jsonl keeps the text.
    std::string shown = opt.prompt + text;
    for (char& c : shown)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') || c == 0x7f) c = '?';
    printf("sample step %lld (%.2f s):\n%s\n", (long long)step, seconds_since(t0), shown.c_str());
    fflush(stdout);
    samples_->write({{"step", step}, {"prompt", opt.prompt}, {"text", text}});
  }

  // Tokens each expert-parallel rank's experts received this step, summed over MoE layers.
  std::vector<double> load_per_ep_rank(const Tensor& load) const {
    std::vector<double> per(size_t(mesh_.ep()), 0.0);
    if (load.numel() == 0) return per;
    const int64_t L = load.dim(0), E = load.dim(1), El = E / mesh_.ep();
    for (int64_t l = 0; l < L; ++l)
      for (int64_t e = 0; e < E; ++e) per[size_t(e / El)] += load.f32()[l * E + e];
    return per;
  }

  static double max_mean_load(const Tensor& load) {
    if (load.numel() == 0) return 1.0;
    const int64_t L = load.dim(0), E = load.dim(1);
    double worst = 0;
    for (int64_t l = 0; l < L; ++l) {
      double mx = 0, sum = 0;
      for (int64_t e = 0; e < E; ++e) mx = std::max(mx, double(load.f32()[l * E + e])), sum += load.f32()[l * E + e];
      if (sum > 0) worst = std::max(worst, mx / (sum / E));
    }
    return worst;
  }

  // {name: value} of a mixture's sources; null without data.mix.
  nlohmann::json per_source(const std::vector<double>& values) const {
    if (!data_.mixture) return nullptr;
    nlohmann::json out = nlohmann::json::object();
    for (size_t s = 0; s < values.size(); ++s) out[data_.names[s]] = values[s];
    return out;
  }

  // Every val split that has a window; with data.mix the overall figures are the weighted means of
  // the sources' (as the training loss mixes them), and each source's is logged too.
  void run_eval(int64_t step) {
    // eval_batches counts global batches, so every layout of the same global batch (ranks, micro
    // batches, accumulation) evaluates the same windows.
    const int64_t batches = int64_t(cfg_.train.eval_batches) * cfg_.train.grad_accum * comm_.size();
    EvalOptions opt;
    opt.B = cfg_.train.micro_batch;
    opt.T = cfg_.data.seq_len;
    opt.batches = batches;
    opt.rank = comm_.rank();
    opt.world = comm_.size();
    opt.document_mask = cfg_.data.document_mask;
    opt.reduce = [this](double* x, int n) { comm_.allreduce_sum(x, n); };
    std::vector<EvalResult> results;
    std::vector<double> losses;
    double weight = 0, loss = 0, bpb = 0;
    int64_t tokens = 0;
    std::string line;
    for (size_t s = 0; s < data_.val.size(); ++s) {
      // A corpus preprocessed with --val-fraction 0 (or a tiny one) has nothing to evaluate on.
      if (data_.val[s].num_tokens() < cfg_.data.seq_len + 1) continue;
      const EvalResult r = evaluate(model_, data_.val[s], token_bytes_[s], opt);
      weight += data_.weights[s];
      loss += data_.weights[s] * r.loss;
      bpb += data_.weights[s] * r.bits_per_byte;
      tokens += r.tokens;
      losses.push_back(r.loss);
      char buf[128];
      snprintf(buf, sizeof buf, " | %s %.4f", data_.names[s].c_str(), r.loss);
      line += buf;
    }
    if (weight == 0 || !comm_.is_root()) return;
    loss /= weight;
    bpb /= weight;
    printf("eval step %lld | val loss %.4f | ppl %.2f | bits/byte %.4f | %lld tokens%s\n", (long long)step, loss,
           std::exp(loss), bpb, (long long)tokens, data_.mixture ? line.c_str() : "");
    fflush(stdout);
    last_val_ = {{"val_loss", loss}, {"val_loss_step", step}};
    nlohmann::json row = {{"step", step}, {"val_loss", loss}, {"val_perplexity", std::exp(loss)},
                          {"val_bits_per_byte", bpb}, {"val_tokens", tokens}};
    if (data_.mixture) {
      nlohmann::json by = nlohmann::json::object();
      for (size_t s = 0, k = 0; s < data_.val.size(); ++s)
        if (data_.val[s].num_tokens() >= cfg_.data.seq_len + 1) by[data_.names[s]] = losses[k++];
      row["val_source_loss"] = by;
    }
    log_metrics(row);
  }

  void log_metrics(const nlohmann::json& row) {
    metrics_->write(row);
    ++metrics_rows_;
  }

  // Every rank saves its own shards into the checkpoint's logical tensors (save_checkpoint_sharded:
  // rank by rank into one state.h5; rank 0 commits). Training stalls only for copying this rank's
  // shards to the snapshot, plus any wait for the previous save (at most one is in flight); the
  // write goes on in the background unless `wait` (the final save, a stop on a signal).
  void save(int64_t step, bool wait) {
    auto t0 = Clock::now();
    report_save(finished_save());
    double waited = seconds_since(t0);
    // With HSDP every replica holds the same state: replica 0's ranks write it, once.
    ShardedSave shard;
    shard.rank = mesh_.coords().shard_rank();
    shard.world = mesh_.coords().shard_size();
    shard.recorded_world_size = comm_.size();
    shard.wait_timeout_s = comm_.timeout_s();
    shard.save_id = save_id(step);
    if (mesh_.replica() != 0) return;
    // Every rank holds the replicated router biases; rank 0 writes them.
    // On a GPU this downloads the state (a stall of its size over PCIe); on the CPU it is the state.
    std::vector<TensorPiece> pieces = checkpoint_pieces(model_.params(), fsdp_.host_pieces(), comm_.is_root());
    std::vector<DatasetSpec> datasets;
    nlohmann::json meta;
    if (comm_.is_root()) {
      datasets = checkpoint_datasets(model_.params());
      // The RNG is counter-based (seed, stream, index) and the sampler a function of (seed, step):
      // the seed and the step are the whole random state.
      meta = {{"tokens", step * tokens_per_step()},
              {"optimizer_steps", fsdp_.optimizer().steps_taken()},
              {"tokenizer", data_.train[0].tokenizer_name()},
              {"tokenizer_hash", data_.train[0].tokenizer_hash()},
              {"sampler", {{"seed", cfg_.run.seed}, {"next_step", step}}},
              {"world_size", comm_.size()},
              {"expert_parallel", mesh_.ep()},
              {"metrics_rows", metrics_rows_}};
      meta.update(last_val_);  // the latest validation loss at or before this step (exports carry it)
      if (!guard_.skips().ranges().empty()) meta["skip_samples"] = guard_.skips().to_json();
      if (skipped_steps_ > 0) meta["skipped_steps"] = skipped_steps_;
    }
    // Unless the process is about to exit, the snapshot is copied in the background while the next
    // step's forward and backward run (they do not change the state); the optimizer waits for it.
    const bool defer = !wait;
    copy_wait_s_ = 0;
    SaveStall st = saver_->save_sharded(step, pieces, std::move(datasets), config_to_yaml(cfg_), std::move(meta), shard,
                                        defer);
    if (comm_.is_root()) {
      if (defer)
        printf("checkpoint step %lld: training stalled %.3f s (waited %.3f s for the previous save); copying rank 0's "
               "%.3f GB and writing in the background\n",
               (long long)step, waited + st.copy_s, waited, st.bytes / 1e9);
      else
        printf("checkpoint step %lld: training stalled %.3f s (snapshot of rank 0's %.3f GB in %.3f s, waited %.3f s "
               "for the previous save)\n",
               (long long)step, waited + st.copy_s, st.bytes / 1e9, st.copy_s, waited);
      fflush(stdout);
    }
    if (wait) report_save(finished_save());
  }

  // New for every save attempt and the same on every rank, so marker files left by a crashed
  // earlier attempt at the same step never count.
  std::string save_id(int64_t step) const {
    char id[40] = {};
    if (comm_.is_root())
      snprintf(id, sizeof id, "%llx-%x-%llx", (long long)step, unsigned(getpid()),
               (unsigned long long)std::chrono::system_clock::now().time_since_epoch().count());
    comm_.broadcast(id, sizeof id);
    return id;
  }

  // The save in flight, once finished (nullopt if none). One that outlives checkpoint.write_timeout_s
  // throws: its thread is stuck in the filesystem and still uses the saver, which is therefore
  // leaked (never destroyed) as the error ends the run; resuming starts from the last committed one.
  std::optional<SaveReport> finished_save() {
    try {
      return saver_->wait_at_most(cfg_.checkpoint.write_timeout_s);
    } catch (const Error&) {
      if (saver_->abandoned()) (void)saver_.release();
      throw;
    }
  }

  // Rank 0 prints a committed save; on every rank a failed one throws (and ends the job).
  void report_save(const std::optional<SaveReport>& r) const {
    if (!r || !comm_.is_root()) return;
    char copy[160] = "";
    if (r->copy_s > 0)
      snprintf(copy, sizeof copy, "snapshot copied in %.3f s in the background, the optimizer waited %.3f s for it; ",
               r->copy_s, copy_wait_s_);
    printf("checkpoint %s committed (%swrite %.3f s, %.2f GB/s)\n", r->dir.c_str(), copy, r->write_s,
           r->bytes / 1e9 / std::max(r->write_s, 1e-9));
    fflush(stdout);
  }

  // The step to start from: 0, or the step of the checkpoint we resumed.
  int64_t resume() {
    const std::string& mode = cfg_.checkpoint.resume;
    std::string dir;
    if (mode == "never" || mode == "none") {
      dir = "";
    } else if (mode == "auto") {
      dir = find_resume_checkpoint(ckpt_root_);
    } else {
      dir = resolve_checkpoint(mode);
    }
    const std::string& init_from = cfg_.checkpoint.init_from;
    if (dir.empty()) {
      if (init_from.empty()) fsdp_.initialize(cfg_.run.seed);
      else start_from_weights(init_from);
      return 0;
    }
    if (!init_from.empty())
      start_notes_.push_back("checkpoint.init_from " + init_from + " is not used: resuming from " + dir +
                             " takes precedence (init_from only starts a run)");
    CheckpointReader ckpt(dir);
    Config saved = parse_config(ckpt.config_yaml(), dir + "/config.yaml");
    ModelConfig same_lambda = saved.model;  // λ and its schedule may change on resume
    same_lambda.mtp_loss_weight = cfg_.model.mtp_loss_weight;
    same_lambda.mtp_loss_weight_step = cfg_.model.mtp_loss_weight_step;
    same_lambda.mtp_loss_weight_final = cfg_.model.mtp_loss_weight_final;
    if (!(same_lambda == cfg_.model))
      throw error(cfg_.source, ": model section differs from the checkpoint being resumed (", dir,
                  "/config.yaml); use checkpoint.resume: never or a new run.out_dir");
    note_schedule_change(saved.train, ckpt.step());
    load_state(ckpt);
    skips_in_checkpoint_ = guard_.add_checkpoint_skips(ckpt.meta());
    resumed_from_ = dir;
    return ckpt.step();
  }

  // Weights, moments and router biases, the optimizer's step count and what meta.json carries on.
  void load_state(const CheckpointReader& ckpt) {
    // Datasets are logical tensors: each rank reads its shards whatever layout saved them.
    load_checkpoint_pieces(ckpt, model_.params(), fsdp_.host_pieces());
    fsdp_.upload_host_pieces();
    const nlohmann::json& meta = ckpt.meta();
    fsdp_.optimizer().set_steps_taken(meta.value("optimizer_steps", ckpt.step()));
    last_val_ = nlohmann::json::object();
    if (meta.contains("val_loss") && meta.contains("val_loss_step"))
      last_val_ = {{"val_loss", meta["val_loss"]}, {"val_loss_step", meta["val_loss_step"]}};
    skipped_steps_ = meta.value("skipped_steps", int64_t(0));
  }

  // A step train_step skipped (the state did not change): logged with the samples it read, counted
  // in metrics.jsonl. True when train.max_bad_steps are bad in a row: the caller rolls back.
  bool bad_step(int64_t done, const StepStats& st) {
    BadStep b{done, NumericGuard::reason(st), guard_.skips().read((done - 1) * global_batch(), global_batch())};
    ++skipped_steps_;
    if (comm_.is_root()) {
      std::string samples;
      for (const auto& [begin, end] : b.samples)
        samples += (samples.empty() ? "" : ", ") + std::to_string(begin) + ".." + std::to_string(end - 1);
      printf("step %lld skipped (no update): %s | loss %.4f | grad norm %.4g | samples %s | %zu bad step(s) in a "
             "row (train.max_bad_steps %d)\n",
             (long long)done, b.reason.c_str(), st.loss, st.grad_norm, samples.c_str(),
             guard_.streak().size() + 1, cfg_.train.max_bad_steps);
      fflush(stdout);
      nlohmann::json ranges = nlohmann::json::array();
      for (const auto& [begin, end] : b.samples) ranges.push_back({begin, end});
      log_metrics({{"step", done}, {"skipped", true}, {"reason", b.reason}, {"loss", st.loss},
                   {"grad_norm", st.grad_norm}, {"samples", ranges}, {"bad_steps", guard_.streak().size() + 1},
                   {"skipped_steps", skipped_steps_}});
    }
    return guard_.bad_step(std::move(b));
  }

  void good_step(int64_t done, const StepStats& st) {
    guard_.good_step();
    if (!comm_.is_root()) return;
    const std::optional<SpikeDetector::Spike> spike = spikes_.add(st.loss);
    if (!spike) return;
    printf("loss spike at step %lld: loss %.4f is %.1f standard deviations above the mean %.4f of the last %d "
           "steps (train.spike_zscore %g)\n",
           (long long)done, spike->loss, spike->zscore, spike->mean, cfg_.train.spike_window, cfg_.train.spike_zscore);
    fflush(stdout);
    log_metrics({{"step", done},
                 {"loss_spike", {{"loss", spike->loss}, {"zscore", spike->zscore}, {"mean", spike->mean},
                                 {"std", spike->std}, {"window", cfg_.train.spike_window}}}});
  }

  // After train.max_bad_steps non-finite steps in a row: every rank loads the last committed
  // checkpoint (from before the streak: periodic saves waited), the streak's samples join the
  // skips (recorded in the run directory first), and training goes on from the checkpoint's step.
  // Returns that step. Throws if there is nothing to roll back to, or train.max_rollbacks is reached.
  int64_t roll_back() {
    report_save(finished_save());
    // Rank 0 commits saves, so it alone knows which is the last; every rank loads that one.
    char dir[4096] = {};
    if (comm_.is_root()) snprintf(dir, sizeof dir, "%s", find_resume_checkpoint(ckpt_root_).c_str());
    comm_.broadcast(dir, sizeof dir);
    std::unique_ptr<CheckpointReader> ckpt;
    if (*dir) ckpt = std::make_unique<CheckpointReader>(dir);
    const int64_t to = ckpt ? ckpt->step() : -1;
    guard_.check_rollback(dir, to);
    // The streak's steps leave the history of the state (skipped_steps too): their data is skipped.
    load_state(*ckpt);
    const nlohmann::json record = guard_.rollback(dir, to, comm_.is_root());
    spikes_.reset();
    if (comm_.is_root()) {
      experts_.reset();
      open_jsonl_logs(to, "trained after the checkpoint rolled back to");
      log_metrics({{"step", to}, {"rollback", record}});
      printf("rolled back to %s (step %lld) after %zu non-finite steps in a row; samples %s are skipped from now on "
             "(recorded in %s; rollback %d of train.max_rollbacks %d)\n",
             dir, (long long)to, record["bad_steps"].size(), record["samples"].dump().c_str(), guard_.file().c_str(),
             guard_.rollbacks(), cfg_.train.max_rollbacks);
      fflush(stdout);
    }
    log_start_ = Clock::now();
    log_tokens_ = 0;
    return to;
  }

  // The schedule is a function of train.steps (and the other schedule keys), so changing them on
  // resume moves the learning rate; the log says by how much instead of changing it silently.
  void note_schedule_change(const TrainConfig& saved, int64_t step) {
    const TrainConfig& now = cfg_.train;
    if (same_schedule(saved, now)) return;
    std::string changed;
    auto differs = [&](const char* key, const auto& a, const auto& b) {
      if (a == b) return;
      std::ostringstream os;
      os << (changed.empty() ? "" : ", ") << "train." << key << " " << a << " -> " << b;
      changed += os.str();
    };
    differs("schedule", saved.schedule, now.schedule);
    differs("steps", saved.steps, now.steps);
    differs("warmup", saved.warmup, now.warmup);
    differs("lr", saved.lr, now.lr);
    differs("min_lr", saved.min_lr, now.min_lr);
    differs("decay_steps", saved.decay_steps, now.decay_steps);
    differs("decay_shape", saved.decay_shape, now.decay_shape);
    char lrs[160];
    snprintf(lrs, sizeof lrs, "the next step (%lld) trains at lr %.4e under the checkpoint's schedule, %.4e under this run's",
             (long long)step + 1, learning_rate(saved, step), learning_rate(now, step));
    start_notes_.push_back("note: the learning-rate schedule differs from the checkpoint's (" + changed + "): " + lrs +
                           " (used from here on)");
  }

  // checkpoint.init_from: the checkpoint's weights (and router biases) into this rank's shards;
  // the optimizer moments stay zero and the run starts at step 0 with its own schedule and data
  // order. Any layout reads any checkpoint (each piece is a range of a logical tensor).
  void start_from_weights(const std::string& path) {
    std::unique_ptr<CheckpointReader> ckpt;
    try {
      ckpt = std::make_unique<CheckpointReader>(path);
      ckpt->verify();
    } catch (const Error& e) {
      throw error(cfg_.source, ": checkpoint.init_from: ", e.what());
    }
    Config saved = parse_config(ckpt->config_yaml(), ckpt->dir() + "/config.yaml");
    if (std::string diff = model_difference(saved.model, cfg_.model); !diff.empty())
      throw error(cfg_.source, ": checkpoint.init_from ", ckpt->dir(), " has another model shape (", diff,
                  "; expected the model section of its config.yaml)");
    const std::string hash = ckpt->meta().value("tokenizer_hash", std::string());
    if (!hash.empty() && !data_.train[0].tokenizer_hash().empty() && hash != data_.train[0].tokenizer_hash())
      throw error(cfg_.source, ": checkpoint.init_from ", ckpt->dir(), " was trained with tokenizer ",
                  ckpt->meta().value("tokenizer", std::string("?")), " but ", cfg_.data.path, " was made with ",
                  data_.train[0].tokenizer_name(), " (expected data made with the checkpoint's tokenizer)");
    std::vector<ShardPiece> pieces = fsdp_.host_pieces();
    for (ShardPiece& p : pieces) p.exp_avg = p.exp_avg_sq = nullptr;  // weights only: fresh moments
    load_checkpoint_pieces(*ckpt, model_.params(), pieces);
    fsdp_.upload_host_pieces();
    start_notes_.push_back("initialized from the weights of " + ckpt->dir() + " (step " +
                           std::to_string(ckpt->step()) + "; fresh optimizer, step 0, this run's schedule)");
  }

  Config cfg_;
  Comm& comm_;
  DeviceChoice device_;  // the compute backend (set before dm_ allocates on it)
  DistributedModel dm_;  // mesh, model, FSDP state, expert exchange
  DeviceMesh& mesh_ = dm_.mesh;
  DeepSeekV3& model_ = dm_.model;
  ShardedModel& fsdp_ = dm_.fsdp;
  DataSources data_;
  MixtureSampler sampler_;
  std::vector<std::vector<int32_t>> token_bytes_;  // per val split
  std::string ckpt_root_, resumed_from_;
  std::unique_ptr<MetricsLog> metrics_, samples_;
  std::unique_ptr<Tokenizer> sample_tok_;  // train.sample_every: the data's tokenizer
  ExpertReport experts_;                   // rank 0: expert loads since the last report
  NumericGuard guard_;                     // non-finite steps, rollbacks, the skipped samples
  SpikeDetector spikes_;                   // rank 0: loss spikes
  int64_t skipped_steps_ = 0;              // updates skipped in the history of the current state
  bool skips_in_checkpoint_ = false;       // the resumed checkpoint recorded skipped samples
  std::vector<std::string> start_notes_;   // printed with the run's header (resume, init_from)
  Clock::time_point process_start_;        // train.time_limit counts from here
  int64_t metrics_rows_ = 0;  // rows in metrics.jsonl (recorded in each checkpoint's meta.json)
  nlohmann::json last_val_ = nlohmann::json::object();  // {val_loss, val_loss_step} of the latest eval, if any
  std::unique_ptr<AsyncSaver> saver_;
  FILE* rank_log_ = nullptr;  // run.rank_logs, ranks other than 0
  double copy_wait_s_ = 0;    // this save's stall at the optimizer while its snapshot was copied
  std::vector<int32_t> window_, ids_, targets_;  // sample()'s [B, T+1] windows and [B, T] ids and targets
  std::vector<int32_t> doc_start_, source_;      // [B, T] with data.document_mask, [B] with data.mix
  double peak_gflops_ = 0;                        // the MFU denominator
  Clock::time_point run_start_, log_start_;
  int64_t log_tokens_ = 0;                        // tokens trained since the last log line
  int64_t start_step_ = 0;
};

}  // namespace

int train(const Config& cfg, Comm& comm) {
  const auto process_start = Clock::now();
  set_num_threads(cfg.train.threads);
  DeviceChoice device = choose_device(cfg, &comm);
  ComputeScope on_device(*device.backend);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  Trainer trainer(cfg, comm, device, process_start);
  return trainer.run();
}

}  // namespace moe
