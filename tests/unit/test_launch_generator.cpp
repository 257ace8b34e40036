// The batched generator (launch/generator.h) on a small random model with the byte tokenizer:
// a prompt's text does not depend on the batch it is decoded in, the KV cache gives the text of the
// no-cache path, stop strings cut exactly and never leak, cancel frees the slot, the context limit
// is refused or slides, and the sampler's filters behave.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "framework/error.h"
#include "launch/generator.h"

using namespace moe;

namespace {

ModelConfig small_byte_model() {
  ModelConfig c;
  c.vocab_size = 256; c.hidden = 32; c.layers = 2; c.dense_layers = 1; c.dense_inter = 48;
  c.heads = 2; c.q_lora_rank = 16; c.kv_lora_rank = 16; c.qk_nope_dim = 8; c.qk_rope_dim = 4; c.v_head_dim = 8;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 16;
  c.init_std = 0.3;  // peaked distributions: greedy text is not one repeated byte
  return c;
}

struct Fixture {
  DeepSeekV3 model{small_byte_model()};
  std::unique_ptr<Tokenizer> tok = make_tokenizer("byte");
  Fixture() { model.params().initialize(5); }
};

struct Output {
  std::string text;
  FinishReason finish = FinishReason::None;
  int64_t events = 0;
};

// Runs every request to the end; the outputs by request id.
std::map<int64_t, Output> run(Generator& gen) {
  std::map<int64_t, Output> out;
  for (int guard = 0; !gen.idle() && guard < 10000; ++guard)
    for (const GenerationEvent& e : gen.step()) {
      Output& o = out[e.id];
      EXPECT_EQ(o.finish, FinishReason::None) << "an event after the final one";
      o.text += e.text;
      o.finish = e.finish;
      ++o.events;
    }
  EXPECT_TRUE(gen.idle());
  return out;
}

SamplingParams sampled(uint64_t seed, int64_t max_tokens = 24) {
  SamplingParams s;
  s.temperature = 0.9;
  s.top_k = 40;
  s.top_p = 0.95;
  s.seed = seed;
  s.max_tokens = max_tokens;
  s.stop_at_eos = false;
  return s;
}

GeneratorOptions options(int64_t batch, bool cache = true, int64_t context = 64) {
  GeneratorOptions o;
  o.max_batch = batch;
  o.use_cache = cache;
  o.context = context;
  return o;
}

}  // namespace

TEST(Generator, TextDoesNotDependOnTheBatch) {
  Fixture f;
  Generator alone(f.model, *f.tok, options(1));
  alone.submit("To be, or not", sampled(7));
  const Output reference = run(alone)[0];
  EXPECT_EQ(reference.finish, FinishReason::Length);
  EXPECT_FALSE(reference.text.empty());

  Generator batch(f.model, *f.tok, options(3));
  batch.submit("Now is the winter", sampled(1, 30));
  const int64_t id = batch.submit("To be, or not", sampled(7));
  batch.submit("", sampled(2, 5));
  batch.submit("A horse!", sampled(3, 10));  // queued until a slot frees
  std::map<int64_t, Output> out = run(batch);
  EXPECT_EQ(out[id].text, reference.text);
  EXPECT_EQ(out.size(), 4u);
  for (auto& [i, o] : out) EXPECT_EQ(o.finish, FinishReason::Length) << i;
}

TEST(Generator, CacheGivesTheTextOfTheNoCachePath) {
  Fixture f;
  for (bool greedy : {true, false}) {
    std::string text[2];
    for (bool cache : {false, true}) {
      Generator gen(f.model, *f.tok, options(2, cache));
      SamplingParams s = sampled(11, 30);
      if (greedy) s.temperature = 0;
      gen.submit("ROMEO:", s);
      gen.submit("JULIET:", sampled(12, 20));
      text[cache] = run(gen)[0].text;
    }
    EXPECT_EQ(text[0], text[1]) << (greedy ? "greedy" : "sampled");
  }
}

TEST(Generator, StopStringsCutExactlyAndNeverLeak) {
  Fixture f;
  SamplingParams s = sampled(4, 40);
  s.temperature = 0;
  Generator plain(f.model, *f.tok, options(1));
  plain.submit("Once", s);
  const std::string full = run(plain)[0].text;
  ASSERT_GE(full.size(), 12u);
  const std::string stop = full.substr(6, 3);  // spans three byte tokens
  const std::string expected = full.substr(0, full.find(stop));
  s.stop = {"never-produced", stop};
  Generator gen(f.model, *f.tok, options(1));
  gen.submit("Once", s);
  std::string streamed;
  FinishReason finish = FinishReason::None;
  for (int guard = 0; !gen.idle() && guard < 1000; ++guard)
    for (const GenerationEvent& e : gen.step()) {
      streamed += e.text;
      EXPECT_EQ(expected.compare(0, streamed.size(), streamed), 0) << "text past the stop: " << streamed;
      finish = e.finish;
    }
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(finish, FinishReason::Stop);
}

TEST(Generator, ZeroTokensAndCancel) {
  Fixture f;
  Generator gen(f.model, *f.tok, options(2));
  SamplingParams none = sampled(1, 0);
  const int64_t empty = gen.submit("hi", none);
  const int64_t long_one = gen.submit("a long one", sampled(2, 50));
  const int64_t short_one = gen.submit("short", sampled(3, 3));
  std::vector<GenerationEvent> first = gen.step();
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first[0].id, empty);
  EXPECT_EQ(first[0].finish, FinishReason::Length);
  EXPECT_EQ(first[0].text, "");
  gen.step();
  EXPECT_EQ(gen.active(), 2);
  gen.cancel(long_one);
  std::map<int64_t, Output> out = run(gen);
  EXPECT_EQ(out[long_one].finish, FinishReason::Cancelled);
  EXPECT_EQ(out[short_one].finish, FinishReason::Length);
  EXPECT_EQ(gen.active(), 0);
}

TEST(Generator, ContextIsRefusedOrSlides) {
  Fixture f;
  Generator strict(f.model, *f.tok, options(1, true, 16));
  EXPECT_THROW(strict.submit("0123456789", sampled(1, 7)), Error);
  EXPECT_NO_THROW(strict.submit("0123456789", sampled(1, 6)));
  GeneratorOptions sliding = options(1, true, 16);
  sliding.sliding_window = true;
  Generator gen(f.model, *f.tok, sliding);
  gen.submit("0123456789", sampled(1, 40));
  std::map<int64_t, Output> out = run(gen);
  EXPECT_EQ(out[0].finish, FinishReason::Length);
  EXPECT_EQ(out[0].text.size(), 40u);  // byte tokens: one character each
}

TEST(Generator, InvalidSamplingIsRefused) {
  Fixture f;
  Generator gen(f.model, *f.tok, options(1));
  SamplingParams s;
  s.temperature = -1;
  EXPECT_THROW(gen.submit("x", s), Error);
  s = SamplingParams();
  s.top_p = 0;
  EXPECT_THROW(gen.submit("x", s), Error);
  s = SamplingParams();
  s.stop = {""};
  EXPECT_THROW(gen.submit("x", s), Error);
  EXPECT_TRUE(gen.idle());
}

TEST(Sampler, FiltersNarrowToTheMostLikely) {
  const float logits[5] = {0.1f, 2.0f, 1.9f, -1.0f, 0.5f};
  for (float u : {0.01f, 0.5f, 0.99f}) {
    EXPECT_EQ(sample_token(logits, 5, 0.0, 0, 1.0, u), 1);   // greedy
    EXPECT_EQ(sample_token(logits, 5, 1.0, 1, 1.0, u), 1);   // top-k 1
    EXPECT_EQ(sample_token(logits, 5, 1.0, 0, 0.01, u), 1);  // top-p below the best's share
    const int32_t two = sample_token(logits, 5, 1.0, 2, 1.0, u);
    EXPECT_TRUE(two == 1 || two == 2);
  }
  EXPECT_EQ(sample_token(logits, 5, 1.0, 2, 1.0, 0.99f), 2);  // the second of the two at the top of u
}
