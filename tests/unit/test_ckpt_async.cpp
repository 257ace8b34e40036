// AsyncSaver: the snapshot is taken when save() returns (later changes to the tensors do not reach
// the checkpoint), results come back once through poll()/wait(), a failed background save is a
// moe::Error naming the step, and the saver keeps working after one.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoints/async_save.h"
#include "test_ckpt_util.h"

namespace moe {
namespace {

using test::bitwise_equal;
using test::expect_error;
using test::ramp;

class CkptAsync : public test::TempDir {};

TEST_F(CkptAsync, SnapshotIsTakenWhenSaveReturns) {
  Tensor w = ramp({64, 8}, 1.f), b = ramp({8}, 2.f);
  Tensor w0 = ramp({64, 8}, 1.f);
  AsyncSaver saver(path("ckpt"), Retention(0), 2);
  EXPECT_FALSE(saver.poll().has_value());
  EXPECT_FALSE(saver.wait().has_value());

  SaveStall st = saver.save(10, {{"w", w}, {"b", b}}, "run: {}\n", {{"tokens", 5}});
  EXPECT_EQ(st.bytes, w.nbytes() + b.nbytes());
  EXPECT_TRUE(saver.in_flight());
  w.fill_(-1.f);  // training goes on while the write runs
  std::optional<SaveReport> r = saver.wait();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(saver.in_flight());
  EXPECT_EQ(r->step, 10);
  EXPECT_EQ(r->dir, path("ckpt") + "/step-00000010");
  EXPECT_EQ(r->bytes, st.bytes);
  EXPECT_GT(r->write_s, 0);
  EXPECT_FALSE(saver.wait().has_value());  // reported once

  CheckpointReader ckpt(r->dir);
  ckpt.verify();
  EXPECT_TRUE(bitwise_equal(ckpt.read("w"), w0));
  EXPECT_TRUE(bitwise_equal(ckpt.read("b"), b));
  EXPECT_EQ(ckpt.world_size(), 2);
  EXPECT_EQ(ckpt.meta()["tokens"], 5);
}

// A deferred copy: save() returns before copying; once wait_snapshot() returns the state may change
// and the checkpoint still holds the values of the save point. Pieces of a tensor (a rank's shard)
// land at their offsets.
TEST_F(CkptAsync, DeferredCopyHoldsTheStateUntilWaitSnapshot) {
  Tensor w = ramp({64, 8}, 1.f), w0 = ramp({64, 8}, 1.f);
  AsyncSaver saver(path("ckpt"), Retention(0), 1);
  EXPECT_LT(saver.wait_snapshot(), 0.1);  // nothing in flight: returns at once
  // Two pieces of w, cut inside row 21: [0, 170) and [170, 512).
  std::vector<TensorPiece> pieces = {{"w", w.shape(), 0, Tensor::borrow(w.f32(), {170})},
                                     {"w", w.shape(), 170, Tensor::borrow(w.f32() + 170, {512 - 170})}};
  SaveStall st = saver.save_sharded(3, pieces, {{"w", w.shape(), DType::F32}}, "", nullptr, ShardedSave{}, true);
  EXPECT_EQ(st.bytes, w.nbytes());
  saver.wait_snapshot();
  w.fill_(-1.f);  // the optimizer step after the snapshot
  std::optional<SaveReport> r = saver.wait();
  ASSERT_TRUE(r.has_value());
  EXPECT_GT(r->copy_s, 0);
  EXPECT_TRUE(bitwise_equal(CheckpointReader(r->dir).read("w"), w0));
}

TEST_F(CkptAsync, PollReportsAFinishedSaveOnce) {
  AsyncSaver saver(path("ckpt"), Retention(1), 1);
  for (int64_t step : {1, 2}) {
    saver.save(step, {{"w", ramp({16}, float(step))}}, "", nullptr);
    std::optional<SaveReport> r;
    for (int i = 0; i < 2000 && !r; ++i) {
      r = saver.poll();
      if (!r) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(r.has_value()) << "save of step " << step << " did not finish in 10 s";
    EXPECT_EQ(r->step, step);
    EXPECT_FALSE(saver.poll().has_value());
  }
  // keep_last 1: the first is gone, the buffers were reused for the second.
  EXPECT_EQ(list_checkpoints(path("ckpt")), std::vector<std::string>{path("ckpt") + "/step-00000002"});
}

TEST_F(CkptAsync, OneSaveInFlight) {
  AsyncSaver saver(path("ckpt"), Retention(0), 1);
  saver.save(1, {{"w", ramp({4}, 0.f)}}, "", nullptr);
  EXPECT_THROW(saver.save(2, {{"w", ramp({4}, 0.f)}}, "", nullptr), InternalError);
  EXPECT_TRUE(saver.wait().has_value());
}

TEST_F(CkptAsync, FailureIsReportedAndTheSaverRecovers) {
  std::ofstream(path("file")) << "not a folder\n";
  AsyncSaver bad(path("file") + "/checkpoints", Retention(0), 1);
  bad.save(3, {{"w", ramp({4}, 0.f)}}, "", nullptr);
  expect_error([&] { bad.wait(); }, "checkpoint of step 3 failed: " + path("file") + "/checkpoints: cannot create");
  EXPECT_FALSE(bad.in_flight());

  // A failure does not poison the next save (say, after space was freed).
  AsyncSaver saver(path("ckpt"), Retention(0), 1);
  saver.save(1, {{"w", ramp({4}, 0.f)}}, "", nullptr);
  EXPECT_TRUE(saver.wait().has_value());
  saver.save(2, {{"w", ramp({4}, 0.f)}, {"w", ramp({4}, 1.f)}}, "", nullptr);  // duplicate name: fails
  expect_error([&] { saver.wait(); }, "checkpoint of step 2 failed");
  saver.save(3, {{"w", ramp({4}, 3.f)}}, "", nullptr);  // a different layout: a new snapshot
  std::optional<SaveReport> r = saver.wait();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(list_checkpoints(path("ckpt")),
            (std::vector<std::string>{path("ckpt") + "/step-00000001", path("ckpt") + "/step-00000003"}));
}

// A write that hangs (a stalled filesystem, simulated by stall_next_write) is reported after the
// timeout instead of being waited on forever; a write that finishes in time is collected as usual.
TEST_F(CkptAsync, StalledWriteIsReportedAfterTheTimeout) {
  AsyncSaver saver(path("ckpt"), Retention(0), 1);
  saver.save(1, {{"w", ramp({4}, 0.f)}}, "", nullptr);
  std::optional<SaveReport> r = saver.wait_at_most(60);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->step, 1);
  EXPECT_FALSE(saver.abandoned());
  EXPECT_FALSE(saver.wait_at_most(60).has_value());  // nothing in flight

  // The stalled saver's thread outlives the test (it sleeps for a minute, then the process is
  // gone), so it is leaked, as the trainer does: it still uses the saver.
  auto* stalled = new AsyncSaver(path("stalled"), Retention(0), 1);
  stalled->stall_next_write(60);
  stalled->save(7, {{"w", ramp({4}, 0.f)}}, "", nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { stalled->wait_at_most(0.2); },
               "checkpoint of step 7: its background write under " + path("stalled") +
                   " has not finished after 0.2 s (checkpoint.write_timeout_s)");
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 30);  // reported, not waited on for the write's minute
  EXPECT_TRUE(stalled->abandoned());
  EXPECT_FALSE(stalled->in_flight());
  EXPECT_FALSE(std::filesystem::exists(path("stalled")));  // nothing written, let alone committed
}

}  // namespace
}  // namespace moe
