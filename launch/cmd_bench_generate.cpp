// `moe bench generate`: decoding speed with the latent KV cache against the no-cache path (every
// token re-runs the whole sequence), in one run, on the config's model (random weights, or a
// checkpoint's). Greedy arg-max on the host, so the numbers are the model's, not the sampler's.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "framework/bf16_weights.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/metrics.h"
#include "framework/precision.h"
#include "framework/profiler.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/model_io.h"
#include "launch/speculative.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  compute().synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int32_t argmax(const float* z, int64_t V) { return int32_t(std::max_element(z, z + V) - z); }

std::vector<int64_t> parse_batches(const std::string& list) {
  std::vector<int64_t> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long long b = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || b < 1) throw error("--batches: '", list, "' (expected sizes >= 1, e.g. 1,16)");
    out.push_back(b);
  }
  if (out.empty()) throw error("--batches: empty (expected sizes >= 1, e.g. 1,16)");
  return out;
}

// v with `digits` decimals (divided, not multiplied, by the power of ten: prints as written).
double rounded(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

}  // namespace

int cmd_bench_generate(int argc, char** argv) {
  Args a(argc, argv, {"config", "set...", "checkpoint", "prompt-tokens", "new-tokens", "batches", "precision",
                      "threads", "device"}, {});
  if (a.help()) {
    puts("usage: moe bench generate [--config FILE.yaml | --checkpoint PATH] [--set key=value]...\n"
         "                          [--prompt-tokens P] [--new-tokens N] [--batches 1,16] [--precision fp32|bf16|fp8]\n"
         "                          [--threads T] [--device auto|cpu|cuda]\n"
         "\n"
         "Times greedy decoding of N new tokens after a P-token prompt (defaults 16 and 256): first the\n"
         "no-cache path at batch 1 (each token re-runs the whole sequence), then the latent KV cache at\n"
         "each batch size (prefill of the prompts, then N decode steps). Prints one JSON line: prefill and\n"
         "decode tokens/s per batch, the no-cache decode tokens/s, the speed-up at batch 1, the cache's\n"
         "bytes per token beside a full per-head K/V cache, and peak memory. The model is the config's\n"
         "(default configs/shakespeare.yaml) with random weights, or a checkpoint's. A model with MTP\n"
         "modules (model.mtp_depth > 0) also decodes the batch-1 prompt greedily with self-speculative\n"
         "decoding (launch/speculative.h) beside plain cached greedy decoding: \"speculative\" gives both\n"
         "times (prefill included), the speed-up, the draft acceptance rate and whether the tokens match.");
    return 0;
  }
  const int64_t P = a.get_int("prompt-tokens", 16), N = a.get_int("new-tokens", 256);
  if (P < 1) throw error("--prompt-tokens: ", P, " (expected >= 1)");
  if (N < 1) throw error("--new-tokens: ", N, " (expected >= 1)");
  const std::vector<int64_t> batches = parse_batches(a.get("batches", "1,16"));
  const Precision precision = parse_precision_flag(a.get("precision", "fp32"), "--precision");
  set_num_threads(int(a.get_int("threads", 0)));
  ComputeScope on_device(*choose_device(a.get("device", "auto"), "--device", nullptr).backend);

  std::unique_ptr<DeepSeekV3> model;
  std::string source;
  ModelConfig mc;
  if (a.has("checkpoint")) {
    if (a.has("config")) throw error("moe bench generate: give --config or --checkpoint, not both");
    CheckpointReader ckpt(resolve_checkpoint(a.get("checkpoint")));
    model = load_model(ckpt);
    source = ckpt.dir();
  } else {
    Config cfg = load_config(a.get("config", "configs/shakespeare.yaml"), a.all("set"));
    model = std::make_unique<DeepSeekV3>(cfg.model);
    model->params().initialize(cfg.run.seed);
    source = cfg.source;
  }
  mc = model->config();
  model->set_precision(precision);
  const Bf16WeightScope weights_held;  // bf16 weights rounded once, as a Generator does
  const int64_t V = mc.vocab_size, positions = P + N;
  auto prompt = [&](int64_t b) {
    std::vector<int32_t> ids(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) ids[size_t(i)] = int32_t(rng_bits(7, uint64_t(b), uint64_t(i)) % uint64_t(V));
    return ids;
  };

  // The no-cache path at batch 1: the whole sequence again for every new token.
  std::vector<int32_t> seq = prompt(0), reference;
  auto t0 = Clock::now();
  for (int64_t i = 0; i < N; ++i) {
    Tensor logits = model->last_logits(seq.data(), 1, int64_t(seq.size()));
    seq.push_back(argmax(logits.f32(), V));
  }
  const double no_cache_s = seconds_since(t0);
  reference.assign(seq.begin() + P, seq.end());

  nlohmann::json runs = nlohmann::json::array();
  double speedup = 0;
  bool same_tokens = true;
  for (int64_t B : batches) {
    KVCache cache(*model, B, positions);
    std::vector<int32_t> next(static_cast<size_t>(B)), first_tokens;
    std::vector<int64_t> slots(static_cast<size_t>(B));
    t0 = Clock::now();
    for (int64_t b = 0; b < B; ++b) {
      Tensor logits = model->prefill(cache, b, prompt(b).data(), P);
      next[size_t(b)] = argmax(logits.f32(), V);
      slots[size_t(b)] = b;
    }
    const double prefill_s = seconds_since(t0);
    Profiler::reset();
    t0 = Clock::now();
    for (int64_t i = 0; i < N; ++i) {
      first_tokens.push_back(next[0]);
      if (i + 1 == N) break;  // the last token needs no decode
      Tensor logits = model->decode(cache, slots.data(), next.data(), B);
      for (int64_t b = 0; b < B; ++b) next[size_t(b)] = argmax(logits.f32() + b * V, V);
    }
    const double decode_s = seconds_since(t0);
    nlohmann::json phases;
    for (auto& [name, sec] : Profiler::seconds()) phases[name] = rounded(sec / decode_s, 3);
    same_tokens = same_tokens && first_tokens == reference;
    const double decode_tps = double(B * N) / decode_s;
    if (B == 1) speedup = decode_tps / (double(N) / no_cache_s);
    runs.push_back({{"batch", B},
                    {"prefill_tokens_per_s", rounded(double(B * P) / prefill_s, 0)},
                    {"decode_tokens_per_s", rounded(decode_tps, 1)},
                    {"decode_ms_per_step", rounded(1000.0 * decode_s / double(N), 2)},
                    {"cache_mib", rounded(double(cache.bytes()) / 1048576.0, 2)},
                    {"decode_time_split", phases}});
  }
  nlohmann::json out = {{"bench", "generate"},
                        {"model", source},
                        {"precision", precision_name(precision)},
                        {"threads", num_threads()},
                        {"prompt_tokens", P},
                        {"new_tokens", N},
                        {"no_cache_decode_tokens_per_s", rounded(double(N) / no_cache_s, 1)},
                        {"cache", runs},
                        {"greedy_tokens_match", same_tokens},
                        {"cache_bytes_per_token", KVCache::bytes_per_token(mc)},
                        {"full_kv_bytes_per_token", KVCache::full_kv_bytes_per_token(mc)},
                        {"peak_rss_mib", std::round(peak_rss_mib())}};
  if (speedup > 0) out["speedup_batch1"] = rounded(speedup, 1);  // with batch 1 among --batches
  if (mc.mtp_depth > 0) {
    t0 = Clock::now();
    const std::vector<int32_t> plain = greedy_decode(*model, prompt(0), N);
    const double plain_s = seconds_since(t0);
    SpeculativeStats st;
    t0 = Clock::now();
    const std::vector<int32_t> spec = speculative_greedy_decode(*model, prompt(0), N, &st);
    const double spec_s = seconds_since(t0);
    out["speculative"] = {{"greedy_tokens_per_s", rounded(double(N) / plain_s, 1)},
                          {"speculative_tokens_per_s", rounded(double(N) / spec_s, 1)},
                          {"speedup", rounded(plain_s / spec_s, 2)},
                          {"acceptance", rounded(st.acceptance(), 3)},
                          {"drafted", st.drafted},
                          {"main_passes", st.main_passes},
                          {"tokens_match", spec == plain}};
  }
  puts(out.dump().c_str());
  return 0;
}

}  // namespace moe
