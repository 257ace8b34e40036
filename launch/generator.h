// Batched text generation from a trained model: the decoder behind `moe generate`, `moe bench
// generate` and `moe serve`. Requests are queued, admitted into free batch slots (their prompts
// prefilled into the model's latent KV cache, model/kv_cache.h), and every step() decodes one
// token for each active sequence together. Each sequence samples with its own parameters and
// seed: token i of a sequence uses rng_uniform(seed, kSampleStream, i), so its text does not
// depend on what else is in the batch (up to GEMM round-off in the logits).
// Stop strings are matched on the decoded text; text that could still be the start of a stop
// string is held back, so no event ever carries text past a stop.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "data_pipeline/tokenizer.h"
#include "framework/bf16_weights.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace moe {

struct SamplingParams {
  int64_t max_tokens = 200;
  double temperature = 0.8;  // 0 = greedy
  int64_t top_k = 0;         // 0 = all
  double top_p = 1.0;        // nucleus: smallest set with probability >= top_p
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool stop_at_eos = true;        // the tokenizer's EOS ends the sequence (not included)
};
// Throws moe::Error naming `what` (a flag or JSON key prefix) for values out of range:
// max_tokens < 0, temperature < 0 or not finite, top_k < 0, top_p outside (0, 1], an empty stop string.
void validate_sampling(const SamplingParams& s, const std::string& what);

// One sampled token id from logits[V]: temperature, then top-k, then top-p; u uniform in (0, 1).
int32_t sample_token(const float* logits, int64_t V, double temperature, int64_t top_k, double top_p, float u);

struct GeneratorOptions {
  int64_t max_batch = 16;   // sequences decoded together (KV cache slots)
  int64_t context = 0;      // positions per sequence (default: the trained context, data.seq_len)
  bool use_cache = true;    // false: re-run the whole window each token (the reference path)
  // Past `context` positions: false = a request that would exceed it is refused at submit();
  // true = the window slides (the oldest tokens are dropped and the cache refilled from the
  // newest context/2 tokens), so generation may run past the context.
  bool sliding_window = false;
};

enum class FinishReason { None, Length, Stop, Eos, Cancelled };
const char* finish_reason_name(FinishReason r);  // "", "length", "stop", "eos", "cancelled"

// What one step() produced for one sequence.
struct GenerationEvent {
  int64_t id = 0;
  std::string text;  // new text since the previous event (may be empty)
  FinishReason finish = FinishReason::None;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

class Generator {
 public:
  // The model and tokenizer are borrowed and must outlive the generator.
  Generator(DeepSeekV3& model, const Tokenizer& tok, GeneratorOptions opt);
  ~Generator();

  // Queues a request; returns its id (0, 1, 2, ...). Throws moe::Error (the generator unchanged)
  // for invalid sampling values, a prompt the tokenizer cannot encode, or (without a sliding
  // window) prompt tokens + max_tokens > context. An empty prompt starts a new document (EOS).
  int64_t submit(const std::string& prompt, const SamplingParams& s);
  // Admits queued requests into free slots (prefill), then decodes one token for every active
  // sequence. Returns one event per sequence that produced text or finished (a finished sequence
  // frees its slot). A request with max_tokens 0 finishes at once with "length".
  std::vector<GenerationEvent> step();
  // Ends a queued or active request; its final event (Cancelled) comes from the next step().
  void cancel(int64_t id);

  int64_t active() const;   // sequences in slots
  int64_t queued() const;   // waiting for a slot
  bool idle() const { return active() == 0 && queued() == 0; }
  const GeneratorOptions& options() const { return opt_; }
  const KVCache* cache() const { return cache_.get(); }  // null without use_cache

 private:
  struct Sequence;
  void admit();
  void prefill(Sequence& s);
  void decode_active(std::vector<GenerationEvent>& events);
  void emit(Sequence& s, uint32_t token, std::vector<GenerationEvent>& events);
  void finish(Sequence& s, FinishReason why, std::vector<GenerationEvent>& events);

  DeepSeekV3& model_;
  const Tokenizer& tok_;
  GeneratorOptions opt_;
  Bf16WeightScope weights_held_;  // the model's weights hold still while it generates
  std::unique_ptr<KVCache> cache_;
  std::deque<std::unique_ptr<Sequence>> queue_;
  std::vector<std::unique_ptr<Sequence>> slots_;  // max_batch entries, null = free
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 0;
};

}  // namespace moe
