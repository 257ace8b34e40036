// The numeric guard's parts (launch/numeric_guard.h): the cut sample stream, the bad-step streak
// and rollback record, the loss-spike detector and MOE_FAULT_INJECT. The whole guard under mpirun:
// tests/mpi/numeric_guard.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "launch/numeric_guard.h"

using namespace moe;
using Ranges = std::vector<SampleSkips::Range>;

TEST(SampleSkips, NothingSkippedReadsOneRun) {
  SampleSkips s;
  EXPECT_EQ(s.read(40, 8), (Ranges{{40, 48}}));
  EXPECT_EQ(s.samples(), 0);
}

TEST(SampleSkips, RangesAreCutOutOfTheStream) {
  SampleSkips s;
  s.add({10, 20});
  s.add({30, 32});
  EXPECT_EQ(s.samples(), 12);
  EXPECT_EQ(s.read(0, 10), (Ranges{{0, 10}}));            // before the first range
  EXPECT_EQ(s.read(8, 4), (Ranges{{8, 10}, {20, 22}}));   // across it
  EXPECT_EQ(s.read(10, 1), (Ranges{{20, 21}}));           // position 10 is sample 20
  EXPECT_EQ(s.read(18, 4), (Ranges{{28, 30}, {32, 34}}));  // across the second
  EXPECT_EQ(s.read(5, 20), (Ranges{{5, 10}, {20, 30}, {32, 37}}));
  // Every position maps to a distinct unskipped sample, in order.
  int64_t prev = -1;
  for (int64_t p = 0; p < 40; ++p) {
    const int64_t x = s.read(p, 1)[0].first;
    EXPECT_GT(x, prev);
    EXPECT_FALSE((x >= 10 && x < 20) || (x >= 30 && x < 32)) << x;
    prev = x;
  }
}

TEST(SampleSkips, AddMergesOverlappingAndTouchingRanges) {
  SampleSkips s;
  s.add({28, 32});
  s.add({36, 40});
  s.add({32, 36});  // touches both
  s.add({5, 5});    // empty: ignored
  EXPECT_EQ(s.ranges(), (Ranges{{28, 40}}));
  s.add({0, 4});
  EXPECT_EQ(s.to_json(), nlohmann::json::parse("[[0, 4], [28, 40]]"));
  EXPECT_EQ(SampleSkips::from_json(s.to_json(), "x").ranges(), s.ranges());
}

TEST(SampleSkips, MalformedListsAreRejected) {
  for (const char* bad : {"{}", "[[1]]", "[[5, 5]]", "[[-1, 3]]", "[[1.5, 3]]", "[\"0-3\"]"}) {
    SCOPED_TRACE(bad);
    try {
      SampleSkips::from_json(nlohmann::json::parse(bad), "f.json");
      FAIL() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("f.json: skip_samples is"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("expected a list of [begin, end] sample ranges"), std::string::npos);
    }
  }
}

class NumericGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("numeric_guard_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  TrainConfig config(int max_bad_steps, int max_rollbacks) {
    TrainConfig t;
    t.max_bad_steps = max_bad_steps;
    t.max_rollbacks = max_rollbacks;
    return t;
  }
  std::filesystem::path dir_;
};

TEST_F(NumericGuardTest, RollbackAfterMaxBadStepsInARowIsRecordedAndReadBack) {
  NumericGuard g(config(2, 3), dir_.string());
  EXPECT_FALSE(g.holding_saves());
  EXPECT_FALSE(g.bad_step({8, "non-finite loss", {{28, 32}}}));
  EXPECT_TRUE(g.holding_saves());
  g.good_step();  // the streak is broken
  EXPECT_FALSE(g.holding_saves());
  EXPECT_FALSE(g.bad_step({10, "non-finite grad norm", {{36, 40}}}));
  EXPECT_TRUE(g.bad_step({11, "non-finite grad norm", {{40, 44}}}));
  g.check_rollback("ckpt/step-00000005", 5);
  const nlohmann::json r = g.rollback("ckpt/step-00000005", 5, /*root=*/true);
  EXPECT_EQ(r["bad_steps"], nlohmann::json::parse("[10, 11]"));
  EXPECT_EQ(r["samples"], nlohmann::json::parse("[[36, 44]]"));
  EXPECT_EQ(g.skips().ranges(), (Ranges{{36, 44}}));
  EXPECT_FALSE(g.holding_saves());
  // A new guard on the same run directory (a resume) skips the same samples and knows the rollback.
  NumericGuard again(config(2, 3), dir_.string());
  EXPECT_TRUE(again.has_file());
  EXPECT_EQ(again.skips().ranges(), (Ranges{{36, 44}}));
  EXPECT_EQ(again.rollbacks(), 1);
  // A checkpoint's record joins the file's.
  EXPECT_TRUE(again.add_checkpoint_skips(nlohmann::json{{"skip_samples", {{0, 4}}}}));
  EXPECT_FALSE(again.add_checkpoint_skips(nlohmann::json{{"optimizer_steps", 3}}));
  EXPECT_EQ(again.skips().ranges(), (Ranges{{0, 4}, {36, 44}}));
}

TEST_F(NumericGuardTest, ZeroMaxBadStepsNeverRollsBackNorHoldsSaves) {
  NumericGuard g(config(0, 3), dir_.string());
  for (int64_t s = 1; s <= 10; ++s) EXPECT_FALSE(g.bad_step({s, "non-finite loss", {}}));
  EXPECT_FALSE(g.holding_saves());
}

TEST_F(NumericGuardTest, RollbackRefusedWithoutCheckpointOrPastTheLimit) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  NumericGuard g(config(1, 1), dir_.string());
  ASSERT_TRUE(g.bad_step({3, "non-finite loss", {{8, 12}}}));
  EXPECT_NE(message([&] { g.check_rollback("", -1); })
                .find("1 non-finite steps in a row (steps 3..3, train.max_bad_steps 1) and no committed checkpoint"),
            std::string::npos);
  // A checkpoint from inside the streak would not hold the state from before it.
  EXPECT_NE(message([&] { g.check_rollback("c/step-00000003", 3); }).find("is from inside the streak"), std::string::npos);
  g.check_rollback("c/step-00000002", 2);
  g.rollback("c/step-00000002", 2, true);
  ASSERT_TRUE(g.bad_step({5, "non-finite loss", {{16, 20}}}));
  EXPECT_NE(message([&] { g.check_rollback("c/step-00000002", 2); })
                .find("and 1 rollback(s) already recorded in " + (dir_ / "skipped_samples.json").string() +
                      ", train.max_rollbacks is 1"),
            std::string::npos);
}

TEST_F(NumericGuardTest, MalformedSkipFileIsAClearError) {
  std::ofstream(dir_ / "skipped_samples.json") << "[1, 2]";
  try {
    NumericGuard g(config(3, 3), dir_.string());
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("skipped_samples.json: not a skip list"), std::string::npos) << e.what();
  }
}

TEST(SpikeDetector, FlagsALossFarAboveTheWindow) {
  SpikeDetector d(4, 3.0);
  for (double x : {2.0, 2.1, 1.9, 2.0}) EXPECT_FALSE(d.add(x));  // filling the window
  EXPECT_FALSE(d.add(2.1));                                    // within the noise
  const auto spike = d.add(5.0);
  ASSERT_TRUE(spike);
  // The window was 2.1, 1.9, 2.0, 2.1: mean 2.025, sample std 0.0957.
  EXPECT_NEAR(spike->mean, 2.025, 1e-12);
  EXPECT_NEAR(spike->std, std::sqrt(0.0275 / 3), 1e-12);
  EXPECT_NEAR(spike->zscore, (5.0 - 2.025) / std::sqrt(0.0275 / 3), 1e-9);
  EXPECT_FALSE(d.add(1.0));  // far below is not a spike
  d.reset();
  EXPECT_FALSE(d.add(100.0));  // an empty window never flags
}

TEST(SpikeDetector, WindowZeroIsOff) {
  SpikeDetector d(0, 1.0);
  for (double x : {1.0, 1.0, 1.0, 50.0}) EXPECT_FALSE(d.add(x));
}

TEST(InjectedFaults, OldAndNewSyntax) {
  // Each process (rank) has its own.
  const char* spec = "1:3;nan_grad@step=7-8,rank=1;nan_loss@step=9";
  InjectedFaults r0 = InjectedFaults::parse(spec), r1 = InjectedFaults::parse(spec);
  EXPECT_TRUE(r1.take(1, 3).crash);
  EXPECT_FALSE(r0.take(0, 3).crash);
  EXPECT_TRUE(r1.take(1, 7).step.nan_grad);
  EXPECT_FALSE(r0.take(0, 7).step.nan_grad);  // only rank 1
  const InjectedFaults::AtStep at8 = r1.take(1, 8);
  EXPECT_TRUE(at8.step.nan_grad);
  EXPECT_FALSE(at8.step.nan_loss || at8.crash);
  EXPECT_TRUE(r0.take(0, 9).step.nan_loss);  // no rank: every rank
  const InjectedFaults::AtStep at9 = r1.take(1, 9);
  EXPECT_TRUE(at9.step.nan_loss);
  EXPECT_FALSE(at9.step.nan_grad);
  // Each fires once: the same step again (after a rollback) runs clean.
  EXPECT_FALSE(r1.take(1, 7).step.nan_grad);
  EXPECT_FALSE(r1.take(1, 3).crash);
  EXPECT_FALSE(r0.take(0, 9).step.nan_loss);
  EXPECT_FALSE(InjectedFaults::parse("").take(0, 0).crash);
}

TEST(InjectedFaults, MalformedValuesAreRejected) {
  for (const char* bad : {"one:3", "1:", "nan_grad", "nan_grad@rank=1", "nan_grad@step=x", "nan_grad@step=5-2",
                          "inf_grad@step=1", "nan_loss@step=1,node=2", ";"}) {
    SCOPED_TRACE(bad);
    try {
      InjectedFaults::parse(bad);
      FAIL() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("MOE_FAULT_INJECT='" + std::string(bad) + "' (expected RANK:STEP"),
                std::string::npos)
          << e.what();
    }
  }
}
