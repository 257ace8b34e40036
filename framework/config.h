// The run configuration: typed sections mirroring the YAML file (DESIGN.md, docs/cli.md).
// load_config() parses and validates; every error names the file and line of the offending key.
// Every section is declared here, those framework/ never reads (parallel, checkpoint) too: one
// schema table (config.cpp) maps each key to its field for parsing, --set, the dump and validation,
// and each consumer reads its typed section (docs/architecture.md, "Layout").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct RouterConfig {
  std::string score = "sigmoid";  // sigmoid | softmax
  double bias_update_rate = 0.001;  // aux-loss-free balancing step (0 = off)
  double aux_loss_coef = 0.0001;    // sequence-wise balance loss (0 = off)
  double z_loss_coef = 0.0;         // router z-loss (0 = off)
  double routed_scaling = 1.0;
  int groups = 1;                   // n_group
  int groups_per_token = 1;         // topk_group
  bool operator==(const RouterConfig&) const = default;
};

struct ModelConfig {
  int vocab_size = 256;
  int hidden = 192;
  int layers = 4;
  int dense_layers = 1;  // first_k_dense_replace
  int dense_inter = 512;
  int heads = 6;
  int q_lora_rank = 96;  // 0 = no q compression (q_proj directly)
  int kv_lora_rank = 64;
  int qk_nope_dim = 32;
  int qk_rope_dim = 16;
  int v_head_dim = 32;
  int shared_experts = 1;
  int routed_experts = 8;
  int experts_per_token = 2;
  int expert_inter = 128;
  RouterConfig router;
  double rope_theta = 10000;
  double rms_norm_eps = 1e-6;
  double init_std = 0.02;
  int mtp_depth = 0;               // multi-token prediction modules (num_nextn_predict_layers)
  double mtp_loss_weight = 0.3;    // λ: loss = main + λ/D · Σ_k MTP_k (DeepSeek-V3: 0.3, then 0.1)
  int64_t mtp_loss_weight_step = 0;    // from this step on λ is mtp_loss_weight_final (0 = never)
  double mtp_loss_weight_final = 0.1;
  bool tie_embeddings = false;
  bool operator==(const ModelConfig&) const = default;
};

struct RunConfig {
  std::string name = "run";
  std::string out_dir = "runs/run";
  uint64_t seed = 1337;
  bool rank_logs = false;  // ranks other than 0 write their own step lines to <out_dir>/logs/rank-R.log
  bool operator==(const RunConfig&) const = default;
};

// The most sources data.mix takes (the mixture's chunk of 4096 windows gives each its share).
constexpr size_t kMaxMixSources = 64;

// One source of a data mixture: a preprocessed folder and its share of the training windows.
struct DataSource {
  std::string path;
  double weight = 1;
  bool operator==(const DataSource&) const = default;
};

struct DataConfig {
  std::string path;  // a preprocessed folder (with train/ and val/ splits)
  // Instead of path: several folders, windows drawn in proportion to the weights (data_pipeline/mixture.h).
  std::vector<DataSource> mix;
  int seq_len = 256;
  // Packed windows keep attention inside each document and restart RoPE positions at its start.
  bool document_mask = false;
  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  int micro_batch = 16;
  int grad_accum = 1;
  int64_t steps = 2000;
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup = 100;
  std::string schedule = "cosine";  // cosine | constant | linear | wsd
  int64_t decay_steps = 0;             // wsd: the last decay_steps of `steps` decay to min_lr
  std::string decay_shape = "linear";  // wsd: linear | cosine | sqrt
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0 = off
  std::string precision = "fp32";  // fp32 | bf16 | fp8
  bool recompute = false;
  int64_t eval_every = 200;  // 0 = only at the end
  int eval_batches = 20;
  int64_t log_every = 10;
  int64_t expert_report_every = 0;  // top experts per MoE layer every N steps; 0 = at each evaluation
  int64_t sample_every = 0;         // generate a sample every N steps (0 = never)
  std::string sample_prompt;        // "" = start a new document
  int64_t sample_tokens = 100;
  double sample_temperature = 0.8;  // 0 = greedy
  int64_t stop_after = 0;           // steps this invocation runs, then save and exit 0 (0 = no limit)
  double time_limit = 0;            // wall-clock minutes, then save and exit 0 (0 = no limit)
  int threads = 0;  // CPU threads per process, 0 = all cores
  // Numeric guard (launch/numeric_guard.h): a step with a non-finite loss or grad norm is skipped;
  // after max_bad_steps in a row (0 = never) roll back to the last checkpoint and skip that data,
  // at most max_rollbacks times. A loss above mean + spike_zscore·std of the last spike_window
  // losses is logged as a spike (spike_window 0 = off).
  int max_bad_steps = 3;
  int max_rollbacks = 3;
  int spike_window = 50;
  double spike_zscore = 5.0;
  bool operator==(const TrainConfig&) const = default;
};

struct ParallelConfig {
  int ep = 1;
  // HSDP: the world splits into this many replicas of world/dp_replicate consecutive ranks; the
  // state is sharded inside a replica and replicated across them (1 = plain FSDP over the world).
  int dp_replicate = 1;
  // At fp8, routed tokens travel to their experts as E4M3 rows (codes + 1x128 scales, ~1/4 of the
  // f32 bytes) and the experts' weight gradients read those rows de-quantised, on any ep.
  bool fp8_dispatch = false;
  bool operator==(const ParallelConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every = 500;  // 0 = only at the end
  int keep_last = 3;    // 0 = keep all
  int64_t keep_every = 0;  // also keep every checkpoint whose step is a multiple (milestones), 0 = none
  std::string resume = "auto";  // auto | never (or none) | <path to a checkpoint>
  std::string init_from;        // a checkpoint whose weights start a fresh run (fine-tuning); "" = none
  // Seconds the trainer waits for a background checkpoint write before calling the filesystem
  // stalled and ending the run with an error (0 = wait forever).
  double write_timeout_s = 1800;
  bool operator==(const CheckpointConfig&) const = default;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  std::string device = "auto";  // auto | cpu | cuda
  std::string source;            // the file it came from, for messages
  bool operator==(const Config&) const = default;
};

// Parses a YAML file, applies `--set a.b=v` overrides (each "a.b=v"), validates. Throws moe::Error
// "<file>:<line>: <what> (expected <what>)" on any problem; overrides are reported as "--set a.b".
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Parses YAML text (for checkpoints, which store the config they were trained with); source_name
// stands for the file in messages and becomes Config::source.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});
// The config as YAML text, every key (round-trips through parse_config exactly, source aside).
std::string config_to_yaml(const Config& c);

// Derived sizes used across the code.
inline int qk_head_dim(const ModelConfig& m) { return m.qk_nope_dim + m.qk_rope_dim; }
// λ of step `step` (0-based): DeepSeek-V3 lowers it once, late in training.
inline double mtp_loss_weight_at(const ModelConfig& m, int64_t step) {
  return m.mtp_loss_weight_step > 0 && step >= m.mtp_loss_weight_step ? m.mtp_loss_weight_final : m.mtp_loss_weight;
}

}  // namespace moe
