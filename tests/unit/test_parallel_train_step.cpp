// train_step (parallel/train_step.h) on one process: the order its hooks see (micro-batches in
// turn, the state unchanged until before_update has returned, this step's expert loads in
// after_update and reset after it), and the numbers it reports (lr from the schedule, the clip
// scale, the loss as the mean over micro-batches).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/optimizer.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "parallel/train_step.h"

using namespace moe;

namespace {

std::vector<float> state(ShardedModel& fsdp) {
  std::vector<float> out;
  for (const ShardPiece& p : fsdp.host_pieces())
    for (const float* src : {p.value, p.exp_avg, p.exp_avg_sq})
      if (src) out.insert(out.end(), src, src + (p.end - p.begin));
  return out;
}

// A world of one, shared: MPI can be initialised only once per process.
Comm& world_of_one() {
  static Comm world(nullptr, nullptr);
  return world;
}

double sum(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t.f32()[i];
  return s;
}

}  // namespace

TEST(TrainStep, HooksSeeTheOrderTheStepPromises) {
  set_num_threads(2);
  const char* src = std::getenv("MOE_SOURCE_DIR");
  Config cfg = load_config(std::string(src ? src : ".") + "/configs/tiny.yaml",
                           {"train.grad_accum=2", "train.grad_clip=0.05", "train.warmup=2", "train.steps=6"});
  DistributedModel dm(world_of_one(), cfg);
  dm.fsdp.initialize(cfg.run.seed);
  const int64_t B = cfg.train.micro_batch, T = cfg.data.seq_len, A = cfg.train.grad_accum;
  std::vector<int32_t> ids(A * B * T), tgt(A * B * T);
  for (int64_t i = 0; i < A * B * T; ++i) {
    ids[i] = int32_t(rng_bits(5, 1, uint64_t(i)) % uint64_t(cfg.model.vocab_size));
    tgt[i] = int32_t(rng_bits(5, 2, uint64_t(i)) % uint64_t(cfg.model.vocab_size));
  }
  const int moe_layers = cfg.model.layers - cfg.model.dense_layers;
  for (int64_t step = 0; step < 3; ++step) {
    std::vector<std::string> events;
    std::vector<float> before = state(dm.fsdp), at_update;
    double losses = 0;
    auto batch = [&](int64_t s, int micro) {
      EXPECT_EQ(s, step);
      events.push_back("batch " + std::to_string(micro));
      return MicroBatch{&ids[micro * B * T], &tgt[micro * B * T]};
    };
    auto before_update = [&] {
      events.push_back("before_update");
      at_update = state(dm.fsdp);
    };
    auto after_update = [&](const StepStats& s) {
      events.push_back("after_update");
      EXPECT_NE(state(dm.fsdp), before);  // the optimizer has run
      ASSERT_NE(s.expert_load, nullptr);
      // Every token of every micro-batch went to experts_per_token experts in each MoE layer.
      EXPECT_EQ(sum(*s.expert_load), double(A * B * T * cfg.model.experts_per_token * moe_layers));
      losses = s.loss;
    };
    const StepStats st = train_step(dm, cfg, step, batch, before_update, after_update);
    EXPECT_EQ(events, (std::vector<std::string>{"batch 0", "batch 1", "before_update", "after_update"}));
    EXPECT_EQ(at_update, before) << "the state changed before a snapshot could finish copying it";
    EXPECT_EQ(sum(dm.model.expert_load()), 0.0) << "the bias update resets the loads";
    EXPECT_EQ(st.lr, learning_rate(cfg.train, step));
    EXPECT_GT(st.grad_norm, cfg.train.grad_clip);
    EXPECT_EQ(st.clip_scale, float(cfg.train.grad_clip / st.grad_norm));
    EXPECT_EQ(st.loss, losses);
    EXPECT_EQ(st.loss, st.local_loss);  // one rank: its micro-batches are the global batch
    EXPECT_EQ(st.expert_load, nullptr);
  }
}

// The step's accuracy is the fraction of the global batch's targets ranked first by the logits
// the step trained on: the same count as evaluation's target ranks. A vocabulary of 4 makes hits
// common, so a wrong count cannot pass as 0 == 0.
TEST(TrainStep, AccuracyIsTheTop1HitsOfTheBatch) {
  set_num_threads(2);
  const char* src = std::getenv("MOE_SOURCE_DIR");
  Config cfg = load_config(std::string(src ? src : ".") + "/configs/tiny.yaml",
                           {"train.grad_accum=2", "model.vocab_size=4", "train.steps=6"});
  DistributedModel dm(world_of_one(), cfg);
  dm.fsdp.initialize(cfg.run.seed);
  const int64_t B = cfg.train.micro_batch, T = cfg.data.seq_len, A = cfg.train.grad_accum, N = B * T;
  std::vector<int32_t> ids(A * N), tgt(A * N);
  for (int64_t i = 0; i < A * N; ++i) {
    ids[i] = int32_t(rng_bits(7, 1, uint64_t(i)) % 4);
    tgt[i] = int32_t(rng_bits(7, 2, uint64_t(i)) % 4);
  }
  for (int64_t step = 0; step < 2; ++step) {
    int64_t hits = 0;  // with this step's weights, before it trains
    std::vector<int32_t> ranks(static_cast<size_t>(N));
    for (int64_t a = 0; a < A; ++a) {
      const ForwardStats f = dm.model.forward_ranked(&ids[a * N], &tgt[a * N], B, T, /*count_load=*/false, ranks.data());
      const int64_t here = std::count(ranks.begin(), ranks.end(), 0);
      EXPECT_EQ(f.top1_hits, double(here));
      hits += here;
    }
    ASSERT_GT(hits, 0);
    ASSERT_LT(hits, A * N);
    auto batch = [&](int64_t, int micro) { return MicroBatch{&ids[micro * N], &tgt[micro * N]}; };
    const StepStats st = train_step(dm, cfg, step, batch, [] {}, [](const StepStats&) {});
    EXPECT_EQ(st.accuracy, double(hits) / double(A * N));
  }
}
