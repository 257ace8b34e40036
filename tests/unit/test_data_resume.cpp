// Resuming preprocess: runs stopped right after each checkpoint (crash_after_checkpoints, which
// leaves the disk as a kill there would) and started again give the bytes of an uninterrupted run,
// for both formats and any --workers; the arguments' fingerprint; the folder lock; a foreign .tmp
// folder. tests/e2e/preprocess_resume.sh kills real processes at random moments.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <map>
#include <random>

#include "data_pipeline/preprocess_state.h"
#include "data_pipeline/shards.h"
#include "framework/sha256.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::read_file;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

// progress.json reads back exactly what a run wrote, and nothing else: a count that is negative,
// fractional, too large for its field (1e300 would be undefined behaviour to convert) or of another
// type is refused (found by tests/fuzz/fuzz_progress_json), so preprocess never resumes from a
// position no run recorded.
TEST(ProgressJson, ReadsBackWhatWasWrittenAndRefusesOtherValues) {
  RunState s;
  s.fingerprint = "f";
  s.stream = {4096, 3, {"aa"}};
  s.at = {1, 12000, 40, 38, true};
  s.skip = 5;
  s.counts.documents = 3;
  s.counts.first_bad = "in.jsonl:7: not JSON";
  const nlohmann::json j = s.to_json();
  EXPECT_EQ(RunState::from_json(j).to_json(), j);
  auto refused = [&](const char* section, const char* key, const nlohmann::json& v) {
    nlohmann::json bad = j;
    bad[section][key] = v;
    EXPECT_THROW(RunState::from_json(bad), std::exception) << section << "." << key << " = " << v.dump();
  };
  for (const nlohmann::json& v : {nlohmann::json(-1), nlohmann::json(2.5), nlohmann::json(1e300), nlohmann::json("7")}) {
    refused("input", "offset", v);
    refused("stream", "tokens", v);
    refused("counts", "text_bytes", v);
  }
  refused("input", "file", nlohmann::json(uint64_t(1) << 32));  // a uint32 field
  refused("input", "mid_doc", nlohmann::json(1));
  nlohmann::json bad = j;
  bad["val"] = {{"bytes", -4}, {"sha256_bin", {"aa"}}};
  EXPECT_THROW(RunState::from_json(bad), std::exception);
  bad["val"] = {{"bytes", 4}, {"sha256_bin", {"aa"}}};
  EXPECT_EQ(RunState::from_json(bad).to_json(), bad);
}

std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = read_file(e.path().string());
  return files;
}

// A long .txt document (read in 1 MiB pieces; left out when !big), blank-line-separated ones, and
// .jsonl lines.
void corpus(const TempDir& t, bool big_file = true) {
  std::mt19937 rng(5);
  std::string big, paras, lines;
  while (big_file && big.size() < (size_t(5) << 18)) {  // 1.3 MB: more than one 1 MiB piece
    big += 'w';
    big += std::to_string(rng() % 997);
    big += rng() % 9 ? ' ' : '\n';
  }
  for (int p = 0; p < 30; ++p) {
    for (int k = 0; k < 1 + int(rng() % 40); ++k) paras += 'p', paras += std::to_string(rng() % 100), paras += ' ';
    paras += "\n\n";
  }
  for (int i = 0; i < 200; ++i) lines += "{\"text\": \"line ", lines += std::to_string(rng() % 10000), lines += "\"}\n";
  if (big_file) write_file(t / "in/a.txt", big);
  write_file(t / "in/b/paras.txt", paras);
  write_file(t / "in/c.jsonl", lines);
}

PreprocessOptions options(const TempDir& t, const std::string& out) {
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / out;
  o.val_fraction = 0.1;
  o.split_docs = true;
  o.workers = 1;
  o.progress_seconds = 0;
  return o;
}

// Runs `o` stopping after one checkpoint each time until it completes; returns the stops.
int run_with_crashes(PreprocessOptions o) {
  o.crash_after_checkpoints = 1;
  for (int stops = 0;; ++stops) {
    o.workers = 1 + stops % 2;  // resuming with another worker count changes nothing
    try {
      preprocess(o);
      return stops;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("stopped after 1 checkpoints"), std::string::npos) << msg;
      EXPECT_NE(msg.find("run the same command again to resume"), std::string::npos) << msg;
      EXPECT_TRUE(fs::exists(o.output + ".tmp/progress.json"));
      if (stops > 1000) return stops;
    }
  }
}

void expect_same_after_crashes(const TempDir& t, const std::string& format, int64_t shard_tokens) {
  auto o = options(t, "ref-" + format);
  o.format = format;
  o.shard_tokens = shard_tokens;
  o.overwrite = true;
  auto summary = preprocess(o);
  auto resumed = o;
  resumed.output = t / ("res-" + format);
  int stops = run_with_crashes(resumed);
  // One stop per full stream shard, one at the end of the input (with the last, shorter shard) and
  // one after the val split. Each stream stop leaves its shard recorded but still .bin.tmp, as a
  // kill between the checkpoint and the rename would.
  const int64_t tokens = summary["train_tokens"].get<int64_t>() + summary["val_tokens"].get<int64_t>();
  EXPECT_EQ(stops, tokens / shard_tokens + 2) << format;
  EXPECT_EQ(tree(o.output), tree(resumed.output)) << format << " " << shard_tokens;
  EXPECT_FALSE(fs::exists(resumed.output + ".tmp"));
  EXPECT_FALSE(fs::exists(resumed.output + "/progress.json"));
  fs::remove_all(resumed.output);
}

TEST(PreprocessResume, EveryCheckpointGivesTheSameBytes) {
  TempDir t;
  corpus(t);
  expect_same_after_crashes(t, "shards", 200000);
  expect_same_after_crashes(t, "megatron", 300000);
}

TEST(PreprocessResume, ManySmallShards) {  // checkpoints inside documents and pieces, many of them
  TempDir t;
  corpus(t, false);
  expect_same_after_crashes(t, "shards", 251);
  expect_same_after_crashes(t, "megatron", 997);
}

TEST(PreprocessResume, OtherArgumentsOrInputsStartOver) {
  TempDir t;
  corpus(t, false);
  auto o = options(t, "out");
  o.shard_tokens = 1000;
  o.crash_after_checkpoints = 2;
  EXPECT_NE(error_of([&] { preprocess(o); }).find("stopped after 2"), std::string::npos);
  o.crash_after_checkpoints = 0;
  o.val_fraction = 0.2;  // another split: the stream is kept only for the same arguments
  testing::internal::CaptureStderr();
  preprocess(o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("holds an interrupted run with other arguments or inputs; starting over"), std::string::npos) << err;
  auto fresh = options(t, "fresh");
  fresh.shard_tokens = 1000;
  fresh.val_fraction = 0.2;
  preprocess(fresh);
  EXPECT_EQ(tree(o.output), tree(fresh.output));

  // A changed input file (size or modification time) also starts over.
  o.output = t / "out2";
  o.crash_after_checkpoints = 2;
  error_of([&] { preprocess(o); });
  write_file(t / "in/c.jsonl", "{\"text\": \"changed\"}\n");
  o.crash_after_checkpoints = 0;
  testing::internal::CaptureStderr();
  auto s = preprocess(o);
  err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("starting over"), std::string::npos) << err;
  EXPECT_EQ(s["resumed_from_tokens"], 0);
}

TEST(PreprocessResume, ReportsWhatItResumed) {
  TempDir t;
  corpus(t, false);
  auto o = options(t, "out");
  o.shard_tokens = 1000;
  o.crash_after_checkpoints = 2;
  error_of([&] { preprocess(o); });
  o.crash_after_checkpoints = 0;
  testing::internal::CaptureStderr();
  auto s = preprocess(o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s["resumed_from_tokens"], 2000);
  EXPECT_NE(err.find("resuming " + t / "out.tmp" + " from its last checkpoint (2000 tokens)"), std::string::npos) << err;
}

// Killed between renaming out.tmp to out and deleting out/progress.json: the next run with the
// same arguments deletes it and is done.
TEST(PreprocessResume, KilledWhilePublishing) {
  TempDir t;
  corpus(t, false);
  auto o = options(t, "out");
  o.shard_tokens = 1000;
  o.crash_after_checkpoints = 4;  // 2 shards, the end of the input, the val split: progress.json as at the end
  EXPECT_NE(error_of([&] { preprocess(o); }).find("stopped after 4"), std::string::npos);
  ASSERT_FALSE(nlohmann::json::parse(read_file(t / "out.tmp/progress.json"))["val"].is_null());
  std::string progress = read_file(t / "out.tmp/progress.json");
  fs::remove_all(t / "out.tmp");
  o.crash_after_checkpoints = 0;
  preprocess(o);
  auto want = tree(t / "out");
  write_file(t / "out/progress.json", progress);
  testing::internal::CaptureStderr();
  auto s = preprocess(o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("was complete but for removing its progress.json; done now"), std::string::npos) << err;
  EXPECT_EQ(tree(t / "out"), want);
  EXPECT_EQ(s["train_tokens"], nlohmann::json::parse(read_file(t / "out/train/manifest.json"))["tokens"]);
  // Another run's progress.json does not make an output replaceable.
  write_file(t / "out/progress.json", "{}");
  EXPECT_EQ(error_of([&] { preprocess(o); }), t / "out" + ": already exists (pass --overwrite to replace it)");
}

// A checkpoint records its shard (with the sha256) before renaming it into place: a run killed in
// between leaves a recorded shard-NNNNN.bin.tmp, which the next run checks and renames. A damaged
// one is an error naming it, never a silent bad shard.
TEST(PreprocessResume, ShardRecordedBeforeItsRename) {
  TempDir t;
  corpus(t, false);
  auto ref = options(t, "ref");
  ref.shard_tokens = 1000;
  preprocess(ref);
  auto o = options(t, "out");
  o.shard_tokens = 1000;
  o.crash_after_checkpoints = 1;
  error_of([&] { preprocess(o); });
  const std::string tmp_shard = t / "out.tmp/train/shard-00000.bin.tmp";
  ASSERT_TRUE(fs::exists(tmp_shard));
  EXPECT_FALSE(fs::exists(t / "out.tmp/train/shard-00000.bin"));
  auto progress = nlohmann::json::parse(read_file(t / "out.tmp/progress.json"));
  EXPECT_EQ(progress["stream"]["tokens"], 1000);
  EXPECT_EQ(progress["stream"]["shard_sha256"], nlohmann::json::array({sha256_file(tmp_shard)}));

  const std::string good = read_file(tmp_shard);
  std::string bad = good;
  bad[10] ^= 1;
  write_file(tmp_shard, bad);
  o.crash_after_checkpoints = 0;
  std::string msg = error_of([&] { preprocess(o); });
  EXPECT_NE(msg.find(tmp_shard + ": recorded as complete in " + t / "out.tmp" + "/progress.json but its sha256 differs"),
            std::string::npos) << msg;
  write_file(tmp_shard, good);
  preprocess(o);
  EXPECT_EQ(tree(t / "out"), tree(t / "ref"));
}

TEST(PreprocessResume, ErrorsBeforeAnyCheckpointLeaveNothing) {
  TempDir t;
  write_file(t / "in/bad.jsonl", "{\"text\": \"ok\"}\n{oops\n");
  auto o = options(t, "out");
  std::string msg = error_of([&] { preprocess(o); });
  EXPECT_EQ(msg, t / "in/bad.jsonl" + ":2: not valid JSON: expected a \"key\" but found 'o' at column 2 (expected one JSON object per line)");
  EXPECT_FALSE(fs::exists(t / "out.tmp"));
  // With a checkpoint behind it, the folder stays for the next run.
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += "{\"text\": \"document number " + std::to_string(i) + "\"}\n";
  write_file(t / "in/bad.jsonl", lines + "{oops\n");
  o.shard_tokens = 1000;
  msg = error_of([&] { preprocess(o); });
  EXPECT_NE(msg.find("bad.jsonl:101: not valid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(the finished part is kept in " + t / "out.tmp" + "; run the same command again to resume)"),
            std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(t / "out.tmp/progress.json"));
  write_file(t / "in/bad.jsonl", lines);  // fixed: a new fingerprint, so a fresh start
  EXPECT_NO_THROW(preprocess(o));
}

TEST(PreprocessResume, ForeignTmpFolderAndConcurrentRuns) {
  TempDir t;
  corpus(t, false);
  auto o = options(t, "out");
  write_file(t / "out.tmp/notes.txt", "mine");
  EXPECT_EQ(error_of([&] { preprocess(o); }),
            t / "out.tmp" + ": exists and was not made by moe preprocess (no progress.json); refusing to delete it");
  EXPECT_TRUE(fs::exists(t / "out.tmp/notes.txt"));
  fs::remove_all(t / "out.tmp");

  // A run killed while writing its first progress.json left only progress.json.tmp: still ours.
  write_file(t / "out.tmp/progress.json.tmp", "{\"fingerpr");
  EXPECT_NO_THROW(preprocess(o));
  EXPECT_FALSE(fs::exists(t / "out.tmp"));
  fs::remove_all(t / "out");

  fs::create_directories(t / "out.tmp");
  int fd = ::open((t / "out.tmp").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // as another run holds it
  EXPECT_EQ(error_of([&] { preprocess(o); }),
            t / "out.tmp" + ": another moe preprocess is writing this output (expected one run per --output)");
  ::close(fd);
  EXPECT_NO_THROW(preprocess(o));
}

}  // namespace
}  // namespace moe
