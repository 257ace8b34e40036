#include "launch/generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/error.h"
#include "framework/rng.h"

namespace moe {

namespace {

constexpr uint64_t kSampleStream = 0x9e17;  // rng stream of sampling (the seed picks the sequence)

// Bytes at the end of `s` that start a UTF-8 character not yet complete (0 if none): held back so
// that every event's text is whole characters (a byte-level model emits a character in pieces).
size_t incomplete_utf8_tail(const std::string& s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// Length of the longest suffix of `s` that is a proper prefix of one of the stop strings.
size_t stop_prefix_tail(const std::string& s, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& stop : stops)
    for (size_t k = std::min(stop.size() - 1, s.size()); k > keep; --k)
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        keep = k;
        break;
      }
  return keep;
}

}  // namespace

void validate_sampling(const SamplingParams& s, const std::string& what) {
  if (s.max_tokens < 0) throw error(what, "max_tokens: ", s.max_tokens, " (expected >= 0)");
  if (!(std::isfinite(s.temperature) && s.temperature >= 0))
    throw error(what, "temperature: ", s.temperature, " (expected a number >= 0)");
  if (s.top_k < 0) throw error(what, "top_k: ", s.top_k, " (expected >= 0)");
  if (!(s.top_p > 0 && s.top_p <= 1)) throw error(what, "top_p: ", s.top_p, " (expected 0 < top_p <= 1)");
  for (const std::string& stop : s.stop)
    if (stop.empty()) throw error(what, "stop: an empty stop string (expected at least one character)");
}

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
    if (cum >= top_p) {
      n = i + 1;
      break;
    }
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

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Eos: return "eos";
    case FinishReason::Cancelled: return "cancelled";
  }
  return "";
}

struct Generator::Sequence {
  int64_t id = 0;
  SamplingParams sampling;
  std::vector<int32_t> tokens;  // prompt, then the generated tokens
  int64_t prompt_tokens = 0, generated = 0;
  int64_t slot = -1;
  std::vector<float> logits;  // of the next token
  std::string pending;        // decoded text not yet emitted (a partial character or stop string)
};

Generator::Generator(DeepSeekV3& model, const Tokenizer& tok, GeneratorOptions opt)
    : model_(model), tok_(tok), opt_(opt) {
  if (opt_.context <= 0) throw error("generator: context must be positive");
  if (opt_.max_batch <= 0) throw error("generator: max_batch must be positive");
  slots_.resize(size_t(opt_.max_batch));
  if (opt_.use_cache) cache_ = std::make_unique<KVCache>(model_, opt_.max_batch, opt_.context);
}

Generator::~Generator() = default;

int64_t Generator::submit(const std::string& prompt, const SamplingParams& s) {
  validate_sampling(s, "");
  auto seq = std::make_unique<Sequence>();
  seq->sampling = s;
  for (uint32_t id : tok_.encode(prompt)) {
    if (int64_t(id) >= model_.config().vocab_size)
      throw error("the prompt encodes to token id ", id, ", outside the model's vocabulary of ",
                  model_.config().vocab_size, " (a tokenizer that does not match the model?)");
    seq->tokens.push_back(int32_t(id));
  }
  if (seq->tokens.empty()) seq->tokens.push_back(int32_t(tok_.eos_id()));  // an empty prompt starts a document
  seq->prompt_tokens = int64_t(seq->tokens.size());
  if (!opt_.sliding_window && seq->prompt_tokens + s.max_tokens > opt_.context)
    throw error("the prompt (", seq->prompt_tokens, " tokens) plus max_tokens (", s.max_tokens,
                ") exceeds the model's context of ", opt_.context,
                " tokens (shorten the prompt, lower max_tokens, or allow a sliding window)");
  seq->id = next_id_++;
  queue_.push_back(std::move(seq));
  return queue_.back()->id;
}

void Generator::cancel(int64_t id) { cancelled_.push_back(id); }

int64_t Generator::active() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s != nullptr; });
}

int64_t Generator::queued() const { return int64_t(queue_.size()); }

std::vector<GenerationEvent> Generator::step() {
  std::vector<GenerationEvent> events;
  for (int64_t id : cancelled_) {
    auto queued = std::find_if(queue_.begin(), queue_.end(), [&](const auto& s) { return s->id == id; });
    if (queued != queue_.end()) {
      finish(**queued, FinishReason::Cancelled, events);
      queue_.erase(queued);
      continue;
    }
    for (auto& s : slots_)
      if (s && s->id == id) finish(*s, FinishReason::Cancelled, events);
  }
  cancelled_.clear();
  admit();
  decode_active(events);
  return events;
}

// Queued requests take free slots, their prompts prefilled.
void Generator::admit() {
  for (size_t slot = 0; slot < slots_.size() && !queue_.empty(); ++slot) {
    if (slots_[slot]) continue;
    slots_[slot] = std::move(queue_.front());
    queue_.pop_front();
    slots_[slot]->slot = int64_t(slot);
    prefill(*slots_[slot]);
  }
}

// The next-token logits of s from its last `context` tokens (or, with the cache after the window
// slid, from the newest context/2 tokens, refilling its slot).
void Generator::prefill(Sequence& s) {
  const int64_t keep = opt_.use_cache && int64_t(s.tokens.size()) > opt_.context ? opt_.context / 2 : opt_.context;
  const int64_t n = std::min<int64_t>(int64_t(s.tokens.size()), keep);
  const int32_t* window = s.tokens.data() + s.tokens.size() - size_t(n);
  Tensor logits = opt_.use_cache ? model_.prefill(*cache_, s.slot, window, n) : model_.last_logits(window, 1, n);
  s.logits.assign(logits.f32(), logits.f32() + model_.config().vocab_size);
}

void Generator::decode_active(std::vector<GenerationEvent>& events) {
  const int64_t V = model_.config().vocab_size, tok_vocab = std::min<int64_t>(V, tok_.vocab_size());
  std::vector<Sequence*> next;  // sequences that go on: their new token is decoded below
  for (auto& slot : slots_) {
    if (!slot) continue;
    Sequence& s = *slot;
    if (s.generated >= s.sampling.max_tokens) {
      finish(s, FinishReason::Length, events);
      continue;
    }
    const SamplingParams& p = s.sampling;
    const int32_t token = sample_token(s.logits.data(), tok_vocab, p.temperature, p.top_k, p.top_p,
                                       rng_uniform(p.seed, kSampleStream, uint64_t(s.generated)));
    ++s.generated;
    if (p.stop_at_eos && uint32_t(token) == tok_.eos_id()) {
      finish(s, FinishReason::Eos, events);
      continue;
    }
    s.tokens.push_back(token);
    emit(s, uint32_t(token), events);
    if (!slot) continue;  // a stop string ended it
    if (s.generated >= p.max_tokens)
      finish(s, FinishReason::Length, events);
    else
      next.push_back(&s);
  }
  if (next.empty()) return;
  if (!opt_.use_cache) {
    for (Sequence* s : next) prefill(*s);
    return;
  }
  std::vector<int64_t> slot_ids;
  std::vector<int32_t> ids;
  for (Sequence* s : next) {
    if (cache_->length[size_t(s->slot)] >= opt_.context) {  // only with a sliding window (submit checks)
      prefill(*s);
      continue;
    }
    slot_ids.push_back(s->slot);
    ids.push_back(s->tokens.back());
  }
  if (slot_ids.empty()) return;
  Tensor logits = model_.decode(*cache_, slot_ids.data(), ids.data(), int64_t(ids.size()));
  size_t i = 0;
  for (Sequence* s : next)
    if (i < slot_ids.size() && s->slot == slot_ids[i]) {
      s->logits.assign(logits.f32() + int64_t(i) * V, logits.f32() + int64_t(i + 1) * V);
      ++i;
    }
}

// Appends the token's text; emits what can no longer be part of a stop string or a character,
// and ends the sequence at a stop string.
void Generator::emit(Sequence& s, uint32_t token, std::vector<GenerationEvent>& events) {
  s.pending += tok_.token_text(token);
  for (const std::string& stop : s.sampling.stop) {
    const size_t at = s.pending.find(stop);
    if (at == std::string::npos) continue;
    s.pending.resize(at);
    finish(s, FinishReason::Stop, events);
    return;
  }
  const size_t hold = std::max(stop_prefix_tail(s.pending, s.sampling.stop), incomplete_utf8_tail(s.pending));
  if (s.pending.size() == hold) return;
  GenerationEvent e;
  e.id = s.id;
  e.text = s.pending.substr(0, s.pending.size() - hold);
  e.prompt_tokens = s.prompt_tokens;
  e.completion_tokens = s.generated;
  s.pending.erase(0, s.pending.size() - hold);
  events.push_back(std::move(e));
}

// The final event (with the text held back) and the slot freed.
void Generator::finish(Sequence& s, FinishReason why, std::vector<GenerationEvent>& events) {
  GenerationEvent e;
  e.id = s.id;
  e.text = std::move(s.pending);
  e.finish = why;
  e.prompt_tokens = s.prompt_tokens;
  e.completion_tokens = s.generated;
  events.push_back(std::move(e));
  if (s.slot >= 0) slots_[size_t(s.slot)].reset();  // destroys s
}

}  // namespace moe
