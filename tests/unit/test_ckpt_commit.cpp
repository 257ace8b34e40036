// Commit, discovery and retention: `latest` and resolve_checkpoint, keep_last, crashed saves
// (.tmp folders, missing COMMITTED), corrupt checkpoints skipped on resume, path errors.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoints/checkpoint.h"
#include "test_ckpt_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::ramp;

class CkptCommit : public test::TempDir {
 protected:
  // A tiny checkpoint whose one tensor encodes the step (so a read shows which one we got).
  std::string save(int64_t step, int keep_last = 0) {
    return save_checkpoint(root(), step, {{"w", ramp({16, 4}, float(step))}}, "run: {}\n", {{"tokens", step * 10}},
                           keep_last);
  }
  std::string root() const { return path("checkpoints"); }
  std::string step_dir(int64_t step) const {
    char buf[32];
    snprintf(buf, sizeof buf, "/step-%08lld", (long long)step);
    return root() + buf;
  }
};

TEST_F(CkptCommit, LatestLinkAndResolve) {
  save(100);
  save(200);
  EXPECT_TRUE(fs::is_symlink(root() + "/latest"));
  EXPECT_EQ(fs::read_symlink(root() + "/latest").string(), "step-00000200");  // relative: the folder can move
  EXPECT_FALSE(fs::exists(root() + "/latest.tmp"));
  EXPECT_EQ(resolve_checkpoint(root()), step_dir(200));
  EXPECT_EQ(resolve_checkpoint(root() + "/"), step_dir(200));
  EXPECT_EQ(resolve_checkpoint(root() + "/latest"), step_dir(200));
  EXPECT_EQ(resolve_checkpoint(step_dir(100)), step_dir(100));
  EXPECT_EQ(resolve_checkpoint(step_dir(100) + "/"), step_dir(100));
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(100), step_dir(200)}));
  CheckpointReader latest(root() + "/latest");
  EXPECT_EQ(latest.step(), 200);
  EXPECT_EQ(latest.dir(), step_dir(200));
  EXPECT_EQ(find_resume_checkpoint(root()), step_dir(200));
}

TEST_F(CkptCommit, RetentionKeepsTheNewest) {
  for (int64_t s : {1, 2, 3, 4}) save(s, 2);
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(3), step_dir(4)}));
  EXPECT_EQ(resolve_checkpoint(root() + "/latest"), step_dir(4));
  int entries = 0;
  for (auto& e : fs::directory_iterator(root())) entries += e.path().filename() != "latest";
  EXPECT_EQ(entries, 2);  // nothing half-deleted left behind
  save(5, 0);             // keep_last 0 keeps all
  EXPECT_EQ(list_checkpoints(root()).size(), 3u);
}

TEST_F(CkptCommit, KeepEveryKeepsMilestones) {
  for (int64_t s : {5, 10, 15, 20, 25, 30, 35})
    save_checkpoint(root(), s, {{"w", ramp({4}, float(s))}}, "", nullptr, Retention(2, 10));
  // The newest two (30, 35) plus every multiple of 10.
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(10), step_dir(20), step_dir(30), step_dir(35)}));
}

TEST_F(CkptCommit, FailedSaveRemovesItsTmpAndKeepsThePrevious) {
  save(1);
  // Two tensors with one name: the save fails halfway through writing state.h5.
  EXPECT_THROW(save_checkpoint(root(), 2, {{"w", ramp({2}, 0)}, {"w", ramp({2}, 1)}}, "", nullptr, 1), InternalError);
  EXPECT_FALSE(fs::exists(root() + "/step-00000002.tmp"));
  EXPECT_EQ(list_checkpoints(root()), std::vector<std::string>{step_dir(1)});
  EXPECT_EQ(find_resume_checkpoint(root()), step_dir(1));
}

TEST_F(CkptCommit, RetentionNeverDeletesTheCheckpointJustWritten) {
  save(10);
  save(20);
  save(5, 1);  // an older step saved after a resume: kept, and `latest` points at it
  EXPECT_EQ(resolve_checkpoint(root() + "/latest"), step_dir(5));
  EXPECT_TRUE(fs::exists(step_dir(5) + "/COMMITTED"));
}

TEST_F(CkptCommit, ResavingAStepReplacesIt) {
  save(7);
  std::string dir = save_checkpoint(root(), 7, {{"w", ramp({2}, 9.f)}}, "", nullptr, 0);
  CheckpointReader r(dir);
  EXPECT_EQ(r.shape("w"), (Shape{2}));
  EXPECT_EQ(list_checkpoints(root()).size(), 1u);
}

TEST_F(CkptCommit, CrashedSavesAreIgnoredAndCleaned) {
  save(100);
  // A save that died before COMMITTED: a .tmp folder, and (worse) a step folder without COMMITTED.
  fs::create_directories(root() + "/step-00000300.tmp");
  std::ofstream(root() + "/step-00000300.tmp/state.h5") << "partial";
  fs::create_directories(step_dir(400));
  std::ofstream(step_dir(400) + "/state.h5") << "partial";

  EXPECT_EQ(list_checkpoints(root()), std::vector<std::string>{step_dir(100)});
  EXPECT_EQ(find_resume_checkpoint(root()), step_dir(100));
  EXPECT_EQ(resolve_checkpoint(root()), step_dir(100));
  expect_error([&] { resolve_checkpoint(step_dir(400)); },
               step_dir(400) + ": checkpoint is not committed (interrupted save?)");
  expect_error([&] { CheckpointReader r(root() + "/step-00000300.tmp"); }, "checkpoint is not committed");

  save(200);
  EXPECT_FALSE(fs::exists(root() + "/step-00000300.tmp"));
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(100), step_dir(200)}));
}

// Flips the bytes of tensor "w" inside state.h5 (found by content, so HDF5 metadata stays intact
// and the file still opens: only the checksum can tell).
void corrupt_tensor_bytes(const std::string& file, const Tensor& w) {
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string needle(static_cast<const char*>(w.raw()), 32);
  size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  for (size_t i = 0; i < 32; ++i) bytes[at + i] = char(~bytes[at + i]);
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

TEST_F(CkptCommit, CorruptCheckpointFailsVerifyAndResumeFallsBack) {
  save(100);
  save(200);
  corrupt_tensor_bytes(step_dir(200) + "/state.h5", ramp({16, 4}, 200.f));
  CheckpointReader bad(step_dir(200));  // still a valid HDF5 file
  expect_error([&] { bad.verify(); }, step_dir(200) + "/state.h5: checksum mismatch");

  testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(root()), step_dir(100));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: skipping checkpoint " + step_dir(200)), std::string::npos) << err;
}

TEST_F(CkptCommit, UnreadableNewestCheckpointFallsBack) {
  save(100);
  save(200);
  std::ofstream(step_dir(200) + "/state.h5", std::ios::trunc) << "garbage";
  std::ofstream(step_dir(100) + "/config.yaml", std::ios::app) << "# edited\n";
  testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(root()), "");  // 200 does not open, 100 fails its checksum
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("skipping checkpoint " + step_dir(200)), std::string::npos) << err;
  EXPECT_NE(err.find(step_dir(100) + "/config.yaml: checksum mismatch"), std::string::npos) << err;
}

TEST_F(CkptCommit, PathErrors) {
  std::string missing = path("nope/step-00000001");
  expect_error([&] { resolve_checkpoint(missing); },
               missing + ": no such checkpoint (expected a step-N folder, a 'latest' link or a checkpoints folder)");
  expect_error([&] { CheckpointReader r(missing); }, "no such checkpoint");
  fs::create_directories(root());
  expect_error([&] { resolve_checkpoint(root()); }, root() + ": no committed checkpoint in this folder");
  expect_error([&] { resolve_checkpoint(root() + "/latest"); }, "no such checkpoint");
  std::ofstream(path("file.txt")) << "x";
  expect_error([&] { resolve_checkpoint(path("file.txt")); }, ": not a checkpoint");
  EXPECT_EQ(find_resume_checkpoint(root()), "");
  EXPECT_EQ(find_resume_checkpoint(path("not-yet")), "");
  EXPECT_TRUE(list_checkpoints(path("not-yet")).empty());
}

}  // namespace
}  // namespace moe
