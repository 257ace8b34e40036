#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/tokenizer.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/model_source.h"

namespace moe {
namespace {

// Samples one token id from logits with temperature, top-k and top-p (nucleus) filtering; u is a
// uniform (0,1) draw. temperature 0 = greedy.
int32_t sample_token(const float* logits, int64_t V, double temperature, int64_t top_k, double top_p, float u) {
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (temperature <= 0) return order[0];
  int64_t keep = top_k > 0 ? std::min(top_k, V) : V;
  std::vector<double> p(static_cast<size_t>(keep));
  double mx = logits[order[0]] / temperature, sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += (p[i] = std::exp(logits[order[i]] / temperature - mx));
  // Smallest prefix whose probability reaches top_p.
  double cum = 0;
  int64_t n = keep;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i] / sum;
    if (cum >= top_p) { n = i + 1; break; }
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += p[i];
  double target = u * total;
  for (int64_t i = 0; i < n; ++i) {
    target -= p[i];
    if (target <= 0) return order[i];
  }
  return order[n - 1];
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  Args a(argc, argv, {"checkpoint", "prompt", "max-tokens", "temperature", "top-k", "top-p", "seed", "threads", "device", "tokenizer"}, {});
  if (a.help()) {
    puts("usage: moe generate --checkpoint PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]\n"
         "                    [--top-p P] [--seed S]\n"
         "\n"
         "Samples a continuation of the prompt and streams it to stdout as it is generated.\n"
         "\n"
         "  --checkpoint PATH  step-N folder, 'latest' link or checkpoints folder (required)\n"
         "  --prompt TEXT      text to continue (required; may be empty)\n"
         "  --max-tokens N     tokens to generate (default 200)\n"
         "  --temperature T    softmax temperature, 0 = greedy (default 0.8)\n"
         "  --top-k K          sample among the K most likely tokens, 0 = all (default 0)\n"
         "  --top-p P          nucleus sampling: smallest set with probability >= P (default 1.0)\n"
         "  --seed S           sampling seed (default 0); the same seed gives the same text\n"
         "  --threads N        CPU threads (default: all cores)\n"
         "  --device D         auto | cpu | cuda (default auto: the GPU when there is one)\n"
         "  --tokenizer T      tokenizer to use (default: the one recorded in the checkpoint)");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe generate: unexpected argument '", a.positional()[0], "' (see --help)");
  std::string prompt = a.required("prompt");
  int64_t max_tokens = a.get_int("max-tokens", 200), top_k = a.get_int("top-k", 0);
  double temperature = a.get_double("temperature", 0.8), top_p = a.get_double("top-p", 1.0);
  uint64_t seed = uint64_t(a.get_int("seed", 0));
  if (max_tokens < 0) throw error("--max-tokens: ", max_tokens, " (expected >= 0)");
  if (temperature < 0) throw error("--temperature: ", temperature, " (expected >= 0)");
  if (top_k < 0) throw error("--top-k: ", top_k, " (expected >= 0)");
  if (!(top_p > 0 && top_p <= 1)) throw error("--top-p: ", top_p, " (expected 0 < P <= 1)");
  set_num_threads(int(a.get_int("threads", 0)));
  ComputeScope on_device(*choose_device(a.get("device", "auto"), "--device", nullptr).backend);

  const ModelSource src = open_model_source(a.required("checkpoint"));  // a checkpoint or an export
  const Config& cfg = src.config;
  std::string tok_name = a.get("tokenizer", src.tokenizer);
  if (tok_name.empty())
    throw error(src.path, ": the ", src.kind, " does not record its tokenizer (trained on a bare Megatron dataset); "
                "pass --tokenizer (expected byte, a tokenizer.json or a SentencePiece .model)");
  auto tok = make_tokenizer(tok_name);
  auto model = load_model(src);
  const int64_t V = cfg.model.vocab_size, ctx = cfg.data.seq_len;

  std::vector<uint32_t> ids = tok->encode(prompt);
  if (ids.empty()) ids.push_back(tok->eos_id());  // an empty prompt starts a new document
  fputs(prompt.c_str(), stdout);
  fflush(stdout);
  // Without a KV cache each step re-runs the last `seq_len` tokens (the trained context length).
  std::string pending;
  for (int64_t i = 0; i < max_tokens; ++i) {
    int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - ctx);
    std::vector<int32_t> window(ids.begin() + start, ids.end());
    Tensor logits = model->last_logits(window.data(), 1, int64_t(window.size()));
    int32_t next = sample_token(logits.f32(), V, temperature, top_k, top_p, rng_uniform(seed, 0x9e17, uint64_t(i)));
    if (next >= tok->vocab_size()) next = int32_t(tok->eos_id());  // ids the tokenizer never produces
    ids.push_back(uint32_t(next));
    std::string piece = tok->token_text(uint32_t(next));
    fwrite(piece.data(), 1, piece.size(), stdout);
    fflush(stdout);
  }
  fputc('\n', stdout);
  return 0;
}

}  // namespace moe
