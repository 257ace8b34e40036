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

#include <unistd.h>

#include "checkpoints/async_save.h"
#include "checkpoints/checkpoint.h"
#include "data_pipeline/shards.h"
#include "framework/error.h"
#include "framework/gemm.h"
#include "framework/metrics.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "launch/device.h"
#include "launch/evaluate.h"
#include "launch/model_io.h"
#include "model/model.h"
#include "framework/optimizer.h"
#include "parallel/comm.h"
#include "parallel/distributed_model.h"
#include "parallel/train_step.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// f32 GEMM throughput of this machine with the threads we use: the denominator of MFU on the CPU.
// Best of several short trials, so a momentary hiccup does not inflate every MFU figure after it.
double measure_peak_gflops() {
  const int64_t n = 1024;  // big enough that thread wake-ups do not count
  Tensor a = Tensor::empty({n, n}), b = Tensor::empty({n, n}), c = Tensor::empty({n, n});
  a.fill_(0.5f);
  b.fill_(0.25f);
  double best = 0;
  for (int trial = 0; trial < 3; ++trial) {
    auto t0 = Clock::now();
    gemm(false, false, n, n, n, 1.f, a.f32(), n, b.f32(), n, 0.f, c.f32(), n);
    best = std::max(best, 2.0 * n * n * n / seconds_since(t0) / 1e9);
  }
  return best;
}

// metrics.jsonl tells the history that led to the current state. A run that died after its last
// checkpoint logged steps the resumed run will log again, so on start every row after the step we
// start from is dropped (and a line torn by a kill). Returns the rows kept. The file is rewritten
// and renamed into place, so a crash here loses nothing.
int64_t keep_metrics_up_to(const fs::path& path, int64_t step) {
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
  fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    if (!out.flush()) throw error(tmp.string(), ": cannot write");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw error(tmp.string(), ": cannot rename to ", path.string(), " (", ec.message(), ")");
  printf("%s: dropped %lld row(s) after step %lld (logged by a run that ended before saving them)\n",
         path.string().c_str(), (long long)dropped, (long long)step);
  return rows;
}

// MOE_FAULT_INJECT=RANK:STEP makes that rank fail at the start of that step (0-based), as a
// crashed node would: for testing that the whole job ends quickly with the failing rank's message.
struct InjectedFault {
  int rank = -1;
  int64_t step = -1;
};
InjectedFault injected_fault() {
  InjectedFault f;
  const char* s = std::getenv("MOE_FAULT_INJECT");
  if (!s || !*s) return f;
  long long rank = -1, step = -1;
  char tail = 0;
  if (std::sscanf(s, "%lld:%lld%c", &rank, &step, &tail) != 2 || rank < 0 || step < 0)
    throw error("MOE_FAULT_INJECT='", s, "' (expected RANK:STEP, e.g. 1:3)");
  f.rank = int(rank);
  f.step = step;
  return f;
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
  Trainer(const Config& cfg, Comm& comm, DeviceChoice device)
      : cfg_(cfg), comm_(comm), device_(std::move(device)), dm_(comm, cfg, device_.groups), train_(TokenDataset::open(cfg.data.path, "train")),
        val_(TokenDataset::open(cfg.data.path, "val")), sampler_(train_, cfg.data.seq_len, cfg.run.seed) {
    for (const TokenDataset* d : {&train_, &val_})
      if (d->vocab_size() > cfg.model.vocab_size)
        throw error(cfg.source, ": model.vocab_size is ", cfg.model.vocab_size, " but ", d->dir(),
                    " was tokenized with vocab_size ", d->vocab_size(), " (expected model.vocab_size >= ",
                    d->vocab_size(), ")");
    token_bytes_ = token_byte_lengths(val_);
    const size_t B = size_t(cfg.train.micro_batch), T = size_t(cfg.data.seq_len);
    window_.resize(B * (T + 1));
    ids_.resize(B * T);
    targets_.resize(B * T);
    ckpt_root_ = (fs::path(cfg.run.out_dir) / "checkpoints").string();
  }

  ~Trainer() {
    if (rank_log_) std::fclose(rank_log_);
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  int run() {
    const TrainConfig& t = cfg_.train;
    start_step_ = resume();
    saver_ = std::make_unique<AsyncSaver>(ckpt_root_, Retention(cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every),
                                          comm_.size());
    open_logs();
    const InjectedFault fault = injected_fault();
    auto batch = [&](int64_t step, int micro) { return sample(step, micro); };
    // A save's snapshot may still be copying the state in the background: the optimizer waits for it.
    auto wait_snapshot = [&] { copy_wait_s_ += saver_->wait_snapshot(); };
    for (int64_t step = start_step_; step < t.steps; ++step) {
      if (fault.rank == comm_.rank() && fault.step == step)
        throw error("injected fault at step ", step, " (MOE_FAULT_INJECT)");
      const auto step_start = Clock::now();
      const int64_t done = step + 1;
      auto log = [&](const StepStats& s) { log_step(done, s, seconds_since(step_start)); };
      train_step(dm_, cfg_, step, batch, wait_snapshot, log);
      const bool last = done == t.steps;
      if ((t.eval_every > 0 && done % t.eval_every == 0) || last) run_eval(done);
      // A background save that finished is reported here; one that failed ends the run (exit 2).
      report_save(saver_->poll());
      const int stop = agreed_stop_signal();
      // The last save and a save on a signal are on disk before the process exits.
      if ((cfg_.checkpoint.every > 0 && done % cfg_.checkpoint.every == 0) || last || stop) save(done, last || stop);
      if (stop) {
        if (comm_.is_root()) printf("stopping on signal %d after step %lld (checkpoint saved)\n", stop, (long long)done);
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
  void open_logs() {
    const int T = cfg_.data.seq_len, W = comm_.size();
    if (comm_.is_root()) {
      fs::create_directories(cfg_.run.out_dir);
      std::ofstream(fs::path(cfg_.run.out_dir) / "config.yaml") << config_to_yaml(cfg_);
      fs::path metrics_path = fs::path(cfg_.run.out_dir) / "metrics.jsonl";
      metrics_rows_ = keep_metrics_up_to(metrics_path, start_step_);
      metrics_ = std::make_unique<MetricsLog>(metrics_path.string());
      ParamCounts pc = count_params(cfg_.model);
      printf("moe train: %s | %.2fM params (%.2fM active) | %d rank(s) (dp %d x ep %d) x %d thread(s) | global batch "
             "%lld x %d tokens | %s | %s\n",
             cfg_.run.name.c_str(), pc.total / 1e6, pc.active / 1e6, W, mesh_.dp(), mesh_.ep(), num_threads(),
             (long long)global_batch(), T, precision_name(model_.precision()), device_.description.c_str());
      printf("data: %s (%lld train tokens, %lld val tokens, %lld windows/epoch)\n", cfg_.data.path.c_str(),
             (long long)train_.num_tokens(), (long long)val_.num_tokens(), (long long)sampler_.windows_per_epoch());
      if (val_.num_tokens() < T + 1)
        printf("warning: %s/val has %lld tokens, fewer than seq_len+1; evaluation is skipped\n",
               cfg_.data.path.c_str(), (long long)val_.num_tokens());
      if (start_step_ > 0) printf("resumed from %s at step %lld\n", resumed_from_.c_str(), (long long)start_step_);
      fflush(stdout);
    }
    if (!comm_.is_root() && cfg_.run.rank_logs) {
      fs::path dir = fs::path(cfg_.run.out_dir) / "logs";
      fs::create_directories(dir);
      fs::path path = dir / ("rank-" + std::to_string(comm_.rank()) + ".log");
      rank_log_ = std::fopen(path.c_str(), start_step_ > 0 ? "a" : "w");
      if (!rank_log_) throw error(path.string(), ": cannot open for writing (run.rank_logs)");
    }
    peak_gflops_ = device_.peak_flops > 0 ? device_.peak_flops / 1e9 : measure_peak_gflops();
    run_start_ = log_start_ = Clock::now();
  }

  // This rank's micro-batch `micro` of a step: global samples step·G + (micro·W + rank)·B onwards,
  // so a batch is a function of (seed, step) whatever the layout.
  MicroBatch sample(int64_t step, int micro) {
    const int B = cfg_.train.micro_batch, T = cfg_.data.seq_len;
    sampler_.fill(step * global_batch() + (int64_t(micro) * comm_.size() + comm_.rank()) * B, B, window_.data());
    for (int b = 0; b < B; ++b) {
      std::copy_n(window_.begin() + b * (T + 1), T, ids_.begin() + b * T);
      std::copy_n(window_.begin() + b * (T + 1) + 1, T, targets_.begin() + b * T);
    }
    return {ids_.data(), targets_.data()};
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
      fprintf(rank_log_, "step %lld | rank %d (dp %d, ep %d) | local loss %.4f | step %.3f s | state %.1f MiB | rss %.0f MiB\n",
              (long long)done, comm_.rank(), mesh_.dp_rank(), mesh_.ep_rank(), s.local_loss, step_time,
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
      printf("step %6lld/%lld | loss %.4f%s | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%% | mem %.0f MiB | load max/mean %.2f | ETA %s\n",
             (long long)done, (long long)t.steps, s.loss, mtp_part, s.lr, s.grad_norm, tps, 100.0 * gflops / peak_gflops_,
             device_mib > 0 ? device_mib : peak_rss_mib(), load_ratio, fmt_duration(eta).c_str());
      fflush(stdout);
      ShardMemory mem = fsdp_.memory();
      nlohmann::json row = {{"step", done}, {"state_mib", mem.shard_bytes / 1048576.0},
                   {"state_fraction", double(mem.shard_bytes) / double(mem.full_bytes)},
                   {"gathered_peak_mib", mem.peak_gathered_bytes / 1048576.0},
                   {"expert_load_per_ep_rank", load_per_ep_rank(load)}, {"loss", s.loss}, {"aux_loss", s.aux_loss},
                   {"z_loss", s.z_loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                   {"tokens", done * tokens_per_step()}, {"tokens_per_s", tps}, {"step_s", step_time},
                   {"gflops_per_rank", gflops}, {"mfu", gflops / peak_gflops_},
                   {"peak_rss_mib", peak_rss_mib()}, {"peak_device_mib", device_mib},
                   {"expert_load_max_mean", load_ratio},
                   {"expert_load", load_rows},
                   {"elapsed_s", seconds_since(run_start_)}};
      if (mtp) row["mtp_loss"] = s.mtp_loss;
      log_metrics(row);
    }
    log_start_ = Clock::now();
    log_tokens_ = 0;
  }

  // The signal any rank caught (SIGTERM if they differ), agreed by all: every rank must stop at
  // the same step boundary. 0 when none did.
  int agreed_stop_signal() const {
    double stop_flag = g_stop_signal;
    comm_.allreduce_sum(&stop_flag, 1);
    return stop_flag > 0 ? (g_stop_signal ? int(g_stop_signal) : SIGTERM) : 0;
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

  void run_eval(int64_t step) {
    // A corpus preprocessed with --val-fraction 0 (or a tiny one) has nothing to evaluate on.
    if (val_.num_tokens() < cfg_.data.seq_len + 1) return;
    // eval_batches counts global batches, so every layout of the same global batch (ranks, micro
    // batches, accumulation) evaluates the same windows.
    const int64_t batches = int64_t(cfg_.train.eval_batches) * cfg_.train.grad_accum * comm_.size();
    EvalOptions opt;
    opt.B = cfg_.train.micro_batch;
    opt.T = cfg_.data.seq_len;
    opt.batches = batches;
    opt.rank = comm_.rank();
    opt.world = comm_.size();
    opt.reduce = [this](double* x, int n) { comm_.allreduce_sum(x, n); };
    EvalResult r = evaluate(model_, val_, token_bytes_, opt);
    if (!comm_.is_root()) return;
    printf("eval step %lld | val loss %.4f | ppl %.2f | bits/byte %.4f | %lld tokens\n", (long long)step, r.loss,
           r.perplexity, r.bits_per_byte, (long long)r.tokens);
    fflush(stdout);
    last_val_ = {{"val_loss", r.loss}, {"val_loss_step", step}};
    log_metrics({{"step", step}, {"val_loss", r.loss}, {"val_perplexity", r.perplexity},
                 {"val_bits_per_byte", r.bits_per_byte}, {"val_tokens", r.tokens}});
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
    report_save(saver_->wait());
    double waited = seconds_since(t0);
    ShardedSave shard;
    shard.rank = comm_.rank();
    shard.world = comm_.size();
    shard.wait_timeout_s = comm_.timeout_s();
    shard.save_id = save_id(step);
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
              {"tokenizer", train_.tokenizer_name()},
              {"tokenizer_hash", train_.tokenizer_hash()},
              {"sampler", {{"seed", cfg_.run.seed}, {"next_step", step}}},
              {"world_size", comm_.size()},
              {"expert_parallel", mesh_.ep()},
              {"metrics_rows", metrics_rows_}};
      meta.update(last_val_);  // the latest validation loss at or before this step (exports carry it)
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
    if (wait) report_save(saver_->wait());
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
    if (dir.empty()) {
      fsdp_.initialize(cfg_.run.seed);
      return 0;
    }
    CheckpointReader ckpt(dir);
    Config saved = parse_config(ckpt.config_yaml(), dir + "/config.yaml");
    ModelConfig same_lambda = saved.model;  // λ and its schedule may change on resume
    same_lambda.mtp_loss_weight = cfg_.model.mtp_loss_weight;
    same_lambda.mtp_loss_weight_step = cfg_.model.mtp_loss_weight_step;
    same_lambda.mtp_loss_weight_final = cfg_.model.mtp_loss_weight_final;
    if (!(same_lambda == cfg_.model))
      throw error(cfg_.source, ": model section differs from the checkpoint being resumed (", dir,
                  "/config.yaml); use checkpoint.resume: never or a new run.out_dir");
    // Datasets are logical tensors: each rank reads its shards whatever layout saved them.
    load_checkpoint_pieces(ckpt, model_.params(), fsdp_.host_pieces());
    fsdp_.upload_host_pieces();
    fsdp_.optimizer().set_steps_taken(ckpt.meta().value("optimizer_steps", ckpt.step()));
    if (ckpt.meta().contains("val_loss") && ckpt.meta().contains("val_loss_step"))
      last_val_ = {{"val_loss", ckpt.meta()["val_loss"]}, {"val_loss_step", ckpt.meta()["val_loss_step"]}};
    resumed_from_ = dir;
    return ckpt.step();
  }

  Config cfg_;
  Comm& comm_;
  DeviceChoice device_;  // the compute backend (set before dm_ allocates on it)
  DistributedModel dm_;  // mesh, model, FSDP state, expert exchange
  DeviceMesh& mesh_ = dm_.mesh;
  DeepSeekV3& model_ = dm_.model;
  ShardedModel& fsdp_ = dm_.fsdp;
  TokenDataset train_, val_;
  BatchSampler sampler_;
  std::vector<int32_t> token_bytes_;
  std::string ckpt_root_, resumed_from_;
  std::unique_ptr<MetricsLog> metrics_;
  int64_t metrics_rows_ = 0;  // rows in metrics.jsonl (recorded in each checkpoint's meta.json)
  nlohmann::json last_val_ = nlohmann::json::object();  // {val_loss, val_loss_step} of the latest eval, if any
  std::unique_ptr<AsyncSaver> saver_;
  FILE* rank_log_ = nullptr;  // run.rank_logs, ranks other than 0
  double copy_wait_s_ = 0;    // this save's stall at the optimizer while its snapshot was copied
  std::vector<int32_t> window_, ids_, targets_;  // sample()'s [B, T+1] windows and [B, T] ids and targets
  double peak_gflops_ = 0;                        // the MFU denominator
  Clock::time_point run_start_, log_start_;
  int64_t log_tokens_ = 0;                        // tokens trained since the last log line
  int64_t start_step_ = 0;
};

}  // namespace

int train(const Config& cfg, Comm& comm) {
  if (cfg.data.path.empty()) throw error(cfg.source, ": data.path is empty (expected a folder made by moe preprocess)");
  set_num_threads(cfg.train.threads);
  DeviceChoice device = choose_device(cfg, &comm);
  ComputeScope on_device(*device.backend);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  Trainer trainer(cfg, comm, device);
  return trainer.run();
}

}  // namespace moe
