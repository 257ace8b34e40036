// The UnitHooks calls of a forward, backward and last_logits (model/unit_runner.h), in order.
// FSDP's collectives follow these calls, and their order decides the bits of a sharded run, so the
// sequence is spelled out here call by call: embedding, each block (its dense unit, then its local
// expert part; the next block of the pass prefetched), the head (with the embedding when tied).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "framework/threads.h"
#include "model/model.h"

using namespace moe;

namespace {

class RecordingHooks : public UnitHooks {
 public:
  explicit RecordingHooks(const ParamStore& ps) : ps_(ps) {}
  void acquire(int u) override { log("acquire", u); }
  void release(int u) override { log("release", u); }
  void prefetch(int u) override { log("prefetch", u); }
  void acquire_grad(int u) override { log("acquire_grad", u); }
  void release_grad(int u) override { log("release_grad", u); }
  std::vector<std::string> calls;

 private:
  void log(const char* what, int u) { calls.push_back(std::string(what) + " " + ps_.units()[size_t(u)].name); }
  const ParamStore& ps_;
};

ModelConfig three_layers(bool tied) {
  ModelConfig c;
  c.vocab_size = 32; c.hidden = 16; c.layers = 3; c.dense_layers = 1; c.dense_inter = 24;
  c.heads = 2; c.q_lora_rank = 12; c.kv_lora_rank = 8; c.qk_nope_dim = 4; c.qk_rope_dim = 4; c.v_head_dim = 6;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 8;
  c.tie_embeddings = tied;
  return c;
}

const std::string L0 = "model.layers.0", L1 = "model.layers.1", L2 = "model.layers.2",
                  X1 = "model.layers.1.mlp.experts[0:4]", X2 = "model.layers.2.mlp.experts[0:4]",
                  Emb = "model.embed_tokens", Head = "head";

std::vector<std::string> forward_calls() {
  return {"acquire " + Emb,  "release " + Emb,
          "acquire " + L0,   "prefetch " + L1, "prefetch " + X1, "release " + L0,
          "acquire " + L1,   "acquire " + X1,  "prefetch " + L2, "prefetch " + X2, "release " + X1, "release " + L1,
          "acquire " + L2,   "acquire " + X2,  "release " + X2,  "release " + L2};
}

std::vector<std::string> head_calls(const char* acquire, const char* release, bool tied) {
  if (!tied) return {std::string(acquire) + " " + Head, std::string(release) + " " + Head};
  return {std::string(acquire) + " " + Head, std::string(acquire) + " " + Emb, std::string(release) + " " + Emb,
          std::string(release) + " " + Head};
}

std::vector<std::string> backward_calls() {
  return {"acquire_grad " + L2, "acquire_grad " + X2, "prefetch " + L1,     "prefetch " + X1,
          "release_grad " + X2, "release_grad " + L2, "acquire_grad " + L1, "acquire_grad " + X1,
          "prefetch " + L0,     "release_grad " + X1, "release_grad " + L1, "acquire_grad " + L0,
          "release_grad " + L0, "acquire_grad " + Emb, "release_grad " + Emb};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST(ComputeUnits, HookCallsInExecutionOrder) {
  set_num_threads(1);
  for (bool tied : {false, true})
    for (bool recompute : {false, true}) {
      SCOPED_TRACE(std::string(tied ? "tied" : "untied") + (recompute ? " recompute" : ""));
      DeepSeekV3 m(three_layers(tied));
      m.set_recompute(recompute);
      m.params().initialize(3);
      RecordingHooks hooks(m.params());
      m.set_unit_hooks(&hooks);
      const int64_t B = 2, T = 4;
      std::vector<int32_t> ids(B * T), tgt(B * T);
      for (int64_t i = 0; i < B * T; ++i) ids[i] = int32_t(i % 32), tgt[i] = int32_t((i * 7) % 32);

      m.forward(ids.data(), tgt.data(), B, T);
      EXPECT_EQ(hooks.calls, forward_calls() + head_calls("acquire", "release", tied));
      hooks.calls.clear();
      m.backward(1.f);
      EXPECT_EQ(hooks.calls, head_calls("acquire_grad", "release_grad", tied) + backward_calls());
      hooks.calls.clear();
      m.last_logits(ids.data(), B, T);
      EXPECT_EQ(hooks.calls, forward_calls() + head_calls("acquire", "release", tied));
      m.set_unit_hooks(nullptr);
    }
}

// What the runner reads: the units in execution order, each naming its parameter units.
TEST(ComputeUnits, ListedInExecutionOrder) {
  DeepSeekV3 m(three_layers(/*tied=*/false));
  const std::vector<ComputeUnit>& cu = m.compute_units();
  ASSERT_EQ(cu.size(), 5u);  // embedding, three blocks, head
  auto names = [&](const ComputeUnit& u) {
    std::vector<std::string> n;
    for (int p : u.params) n.push_back(m.params().units()[size_t(p)].name);
    return n;
  };
  EXPECT_EQ(names(cu[0]), std::vector<std::string>{Emb});
  EXPECT_EQ(names(cu[1]), std::vector<std::string>{L0});
  EXPECT_EQ(names(cu[2]), (std::vector<std::string>{L1, X1}));
  EXPECT_EQ(names(cu[4]), std::vector<std::string>{Head});
  EXPECT_EQ(cu[1].prefetch_forward, 2);
  EXPECT_EQ(cu[1].prefetch_backward, -1);
  EXPECT_EQ(cu[3].prefetch_forward, -1);
  EXPECT_EQ(cu[3].prefetch_backward, 2);
}
