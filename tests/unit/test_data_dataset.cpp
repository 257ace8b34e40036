// TokenDataset: opening split and preprocessed folders, reads across shards, and the errors for
// missing, malformed, truncated and corrupt data.
#include <gtest/gtest.h>

#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::read_file;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

// Preprocesses `text` (one document) into t/out with 64-token shards and no val split.
std::string make_data(const TempDir& t, const std::string& text) {
  write_file(t / "in/doc.txt", text);
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / "out";
  o.val_fraction = 0.0;
  o.workers = 1;
  o.shard_tokens = 64;
  preprocess(o);
  return t / "out";
}

std::string sample_text() {
  std::string s;
  for (int i = 0; i < 200; ++i) s += char('a' + (i * 7) % 26);
  return s;  // 201 tokens with the EOS: shards of 64, 64, 64, 9
}

TEST(TokenDataset, OpensPreprocessedAndSplitFolders) {
  TempDir t;
  std::string dir = make_data(t, sample_text());
  auto d = TokenDataset::open(dir);
  EXPECT_EQ(d.dir(), dir + "/train");
  EXPECT_EQ(d.num_tokens(), 201);
  EXPECT_EQ(d.vocab_size(), 256);
  EXPECT_EQ(d.tokenizer_name(), "byte");
  EXPECT_EQ(d.tokenizer_hash(), make_tokenizer("byte")->hash());
  EXPECT_EQ(d.manifest()["shards"].size(), 4u);
  auto direct = TokenDataset::open(dir + "/train");
  EXPECT_EQ(direct.num_tokens(), 201);
  EXPECT_EQ(TokenDataset::open(dir, "val").num_tokens(), 0);
  d.verify();

  std::string text = sample_text();
  std::vector<int32_t> buf(201);
  d.read(0, 201, buf.data());
  for (int i = 0; i < 200; ++i) ASSERT_EQ(buf[i], int32_t((unsigned char)text[i]));
  EXPECT_EQ(buf[200], 0);  // EOS
  d.read(60, 80, buf.data());  // spans shards 0, 1 and 2
  for (int i = 0; i < 80; ++i) ASSERT_EQ(buf[i], int32_t((unsigned char)text[60 + i]));
  EXPECT_EQ(d.token(128), uint32_t((unsigned char)text[128]));

  TokenDataset moved = std::move(d);
  EXPECT_EQ(moved.num_tokens(), 201);
}

TEST(TokenDataset, MissingFolderAndManifest) {
  TempDir t;
  EXPECT_EQ(error_of([&] { TokenDataset::open(t / "nope"); }),
            t / "nope" + ": no such data folder (expected the output of moe preprocess)");
  fs::create_directories(t / "empty");
  EXPECT_NE(error_of([&] { TokenDataset::open(t / "empty"); }).find("no manifest.json and no 'train' split folder"),
            std::string::npos);
  fs::create_directories(t / "empty/train");
  EXPECT_EQ(error_of([&] { TokenDataset::open(t / "empty"); }).rfind(t / "empty/train/manifest.json: no such file", 0), 0u);
}

TEST(TokenDataset, MalformedManifest) {
  TempDir t;
  std::string dir = make_data(t, sample_text()) + "/train";
  std::string good = read_file(dir + "/manifest.json");
  auto expect_error = [&](const std::string& manifest, const std::string& what) {
    write_file(dir + "/manifest.json", manifest);
    std::string msg = error_of([&] { TokenDataset::open(dir); });
    EXPECT_EQ(msg.rfind(dir + "/manifest.json: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  expect_error("{\"format_version\": 1,", "not valid JSON");
  auto j = nlohmann::json::parse(good);
  j.erase("vocab_size");
  expect_error(j.dump(), "vocab_size missing (expected a non-negative integer)");
  j = nlohmann::json::parse(good);
  j["format_version"] = 2;
  expect_error(j.dump(), "format_version 2 is not supported (expected 1)");
  j = nlohmann::json::parse(good);
  j["shards"][1]["tokens"] = "64";
  expect_error(j.dump(), "shards[1].tokens has the wrong type");
  j = nlohmann::json::parse(good);
  j["tokens"] = 200;
  expect_error(j.dump(), "shards hold 201 tokens and 4 documents, the totals say 200 and 4");
  j = nlohmann::json::parse(good);
  j["shards"][0]["file"] = "../../etc/passwd.bin";
  expect_error(j.dump(), "expected a file name like shard-00000.bin");
}

TEST(TokenDataset, TruncatedShard) {
  TempDir t;
  std::string dir = make_data(t, sample_text()) + "/train";
  fs::resize_file(dir + "/shard-00000.bin", 100);
  EXPECT_EQ(error_of([&] { TokenDataset::open(dir); }),
            dir + "/shard-00000.bin: size 100 bytes, manifest says 128 (corrupt or truncated shard; re-run moe preprocess)");
  fs::remove(dir + "/shard-00000.bin");
  EXPECT_NE(error_of([&] { TokenDataset::open(dir); }).find("shard-00000.bin: missing"), std::string::npos);
}

TEST(TokenDataset, VerifyNamesTheCorruptShard) {
  TempDir t;
  std::string dir = make_data(t, sample_text()) + "/train";
  std::string bin = read_file(dir + "/shard-00002.bin");
  bin[10] ^= 1;  // still a valid byte token, so only the checksum can tell
  write_file(dir + "/shard-00002.bin", bin);
  auto d = TokenDataset::open(dir);
  std::string msg = error_of([&] { d.verify(); });
  EXPECT_EQ(msg, dir + "/shard-00002.bin: sha256 differs from manifest.json (corrupt or truncated shard; re-run moe preprocess)");

  std::string idx = read_file(dir + "/shard-00001.idx");
  idx[0] ^= 1;
  write_file(dir + "/shard-00001.idx", idx);
  msg = error_of([&] { TokenDataset::open(dir).verify(); });
  EXPECT_EQ(msg.rfind(dir + "/shard-00001.idx: sha256 differs", 0), 0u) << msg;  // shard 1 is reported first
}

TEST(TokenDataset, TokenOutsideVocabularyIsAnError) {
  TempDir t;
  std::string dir = make_data(t, sample_text()) + "/train";
  std::string bin = read_file(dir + "/shard-00001.bin");
  bin[2 * 5 + 1] = 1;  // token 5 of shard 1 (global 69) becomes >= 256
  write_file(dir + "/shard-00001.bin", bin);
  auto d = TokenDataset::open(dir);
  std::vector<int32_t> buf(64);
  d.read(0, 64, buf.data());  // shard 0 is fine
  std::string msg = error_of([&] { d.read(60, 20, buf.data()); });
  EXPECT_NE(msg.find(dir + "/shard-00001.bin: token "), std::string::npos) << msg;
  EXPECT_NE(msg.find(" at offset 5 is outside the vocabulary (vocab_size 256)"), std::string::npos) << msg;
  EXPECT_FALSE(error_of([&] { d.token(69); }).empty());
  EXPECT_FALSE(error_of([&] { d.verify(); }).empty());
}

}  // namespace
}  // namespace moe
