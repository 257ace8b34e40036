// preprocess on small temp corpora: exact shard bytes, indexes and manifests; the val cut;
// independence from --workers; and every input error.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "framework/sha256.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::read_file;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

std::string u16le(const std::string& s) {  // the .bin bytes of byte-tokenised text
  std::string out;
  for (unsigned char c : s) out += char(c), out += '\0';
  return out;
}

std::string u64le(std::initializer_list<uint64_t> v) {
  std::string out;
  for (uint64_t x : v)
    for (int b = 0; b < 8; ++b) out += char((x >> (8 * b)) & 0xff);
  return out;
}

// Three documents in sorted order: a.txt "hello", c.txt (empty, skipped), sub/b.jsonl "ab", "xyz".
// Stream: "hello\0ab\0xyz\0" (13 tokens).
void small_corpus(const TempDir& t) {
  write_file(t / "in/a.txt", "hello");
  write_file(t / "in/c.txt", "");
  write_file(t / "in/sub/b.jsonl", "{\"text\": \"ab\"}\n\n{\"id\": 7, \"text\": \"xyz\"}\n");
  write_file(t / "in/notes.md", "ignored");
}

PreprocessOptions options(const TempDir& t) {
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / "out";
  o.val_fraction = 0.2;  // ceil(0.2 * 13) = 3 tokens: "yz\0", cut inside the last document
  o.workers = 1;
  return o;
}

TEST(Preprocess, WritesExactShardsAndManifests) {
  TempDir t;
  small_corpus(t);
  auto summary = preprocess(options(t));
  EXPECT_EQ(summary["documents"], 4);  // the empty one is counted, then skipped
  EXPECT_EQ(summary["empty_documents"], 1);
  EXPECT_EQ(summary["files"], 3);
  EXPECT_EQ(summary["train_tokens"], 10);
  EXPECT_EQ(summary["val_tokens"], 3);

  std::string train = t / "out/train", val = t / "out/val";
  EXPECT_EQ(read_file(train + "/shard-00000.bin"), u16le(std::string("hello\0ab\0x", 10)));
  EXPECT_EQ(read_file(train + "/shard-00000.idx"), u64le({0, 6, 9, 10}));
  EXPECT_EQ(read_file(val + "/shard-00000.bin"), u16le(std::string("yz\0", 3)));
  EXPECT_EQ(read_file(val + "/shard-00000.idx"), u64le({0, 3}));

  auto m = nlohmann::json::parse(read_file(train + "/manifest.json"));
  EXPECT_EQ(m["format_version"], 1);
  EXPECT_EQ(m["split"], "train");
  EXPECT_EQ(m["tokenizer"], "byte");
  EXPECT_EQ(m["tokenizer_hash"], make_tokenizer("byte")->hash());
  EXPECT_EQ(m["vocab_size"], 256);
  EXPECT_EQ(m["eos_id"], 0);
  EXPECT_EQ(m["dtype"], "u16");
  EXPECT_EQ(m["documents"], 3);
  EXPECT_EQ(m["tokens"], 10);
  ASSERT_EQ(m["shards"].size(), 1u);
  EXPECT_EQ(m["shards"][0]["file"], "shard-00000.bin");
  EXPECT_EQ(m["shards"][0]["tokens"], 10);
  EXPECT_EQ(m["shards"][0]["documents"], 3);
  EXPECT_EQ(m["shards"][0]["sha256_bin"], sha256_file(train + "/shard-00000.bin"));
  EXPECT_EQ(m["shards"][0]["sha256_idx"], sha256_file(train + "/shard-00000.idx"));
  auto v = nlohmann::json::parse(read_file(val + "/manifest.json"));
  EXPECT_EQ(v["split"], "val");
  EXPECT_EQ(v["tokens"], 3);
  EXPECT_EQ(v["documents"], 1);  // the piece of "xyz" after the cut

  EXPECT_FALSE(fs::exists(t / "out/doc-starts.u64"));
  for (auto& e : fs::directory_iterator(t.path)) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);
}

TEST(Preprocess, SplitsLongStreamsIntoShards) {
  TempDir t;
  small_corpus(t);
  auto o = options(t);
  o.shard_tokens = 4;
  preprocess(o);
  // train "hell" | "o\0ab" | "\0x"; every shard's index starts at 0 even inside a document.
  std::string train = t / "out/train";
  EXPECT_EQ(read_file(train + "/shard-00000.bin"), u16le("hell"));
  EXPECT_EQ(read_file(train + "/shard-00001.bin"), u16le(std::string("o\0ab", 4)));
  EXPECT_EQ(read_file(train + "/shard-00002.bin"), u16le(std::string("\0x", 2)));
  EXPECT_FALSE(fs::exists(train + "/shard-00003.bin"));
  EXPECT_EQ(read_file(train + "/shard-00000.idx"), u64le({0, 4}));
  EXPECT_EQ(read_file(train + "/shard-00001.idx"), u64le({0, 2, 4}));
  EXPECT_EQ(read_file(train + "/shard-00002.idx"), u64le({0, 1, 2}));
  auto m = nlohmann::json::parse(read_file(train + "/manifest.json"));
  ASSERT_EQ(m["shards"].size(), 3u);
  EXPECT_EQ(m["documents"], 5);
  EXPECT_EQ(m["shards"][2]["tokens"], 2);
  EXPECT_EQ(read_file(t / "out/val/shard-00000.bin"), u16le(std::string("yz\0", 3)));

  // A cut on a shard boundary (10 = 2 x 5): the train shards stay whole, val starts a fresh shard.
  o.shard_tokens = 5;
  o.output = t / "out5";
  preprocess(o);
  EXPECT_EQ(read_file(t / "out5/train/shard-00000.bin"), u16le("hello"));
  EXPECT_EQ(read_file(t / "out5/train/shard-00001.bin"), u16le(std::string("\0ab\0x", 5)));
  EXPECT_EQ(read_file(t / "out5/train/shard-00001.idx"), u64le({0, 1, 4, 5}));
  EXPECT_FALSE(fs::exists(t / "out5/train/shard-00002.bin"));
  EXPECT_EQ(read_file(t / "out5/val/shard-00000.bin"), u16le(std::string("yz\0", 3)));

  // A document starting exactly at a shard boundary is listed once, at offset 0.
  o.shard_tokens = 6;
  o.output = t / "out6";
  preprocess(o);
  EXPECT_EQ(read_file(t / "out6/train/shard-00001.idx"), u64le({0, 3, 4}));

  auto d = TokenDataset::open(t / "out");
  std::vector<int32_t> all(10);
  d.read(0, 10, all.data());
  std::string s(all.begin(), all.end());
  EXPECT_EQ(s, std::string("hello\0ab\0x", 10));
}

TEST(Preprocess, ValSplitSizes) {
  TempDir t;
  std::string text(1000, 'a');
  write_file(t / "in/one.txt", text);  // a single 1001-token document
  auto o = options(t);
  for (double f : {0.0, 0.001, 0.05, 0.5}) {
    o.val_fraction = f;
    o.overwrite = true;
    auto s = preprocess(o);
    int64_t want = f > 0 ? int64_t(std::ceil(f * 1001)) : 0;
    EXPECT_EQ(s["val_tokens"], want) << f;
    EXPECT_EQ(s["train_tokens"], 1001 - want) << f;
    auto val = TokenDataset::open(t / "out", "val");
    EXPECT_EQ(val.num_tokens(), want);
  }
  auto v = nlohmann::json::parse(read_file(t / "out/val/manifest.json"));
  EXPECT_EQ(v["tokens"], 501);
  o.val_fraction = 0.0;
  preprocess(o);
  v = nlohmann::json::parse(read_file(t / "out/val/manifest.json"));
  EXPECT_EQ(v["tokens"], 0);
  EXPECT_TRUE(v["shards"].empty());
}

// The byte tokenizer lets preprocess read long .txt files in 1 MiB pieces; a document must come out
// whole: one EOS, one index entry, errors counted from its start.
TEST(Preprocess, LongDocumentsAreReadInPieces) {
  TempDir t;
  const size_t MiB = size_t(1) << 20;
  std::string big;
  for (size_t i = 0; i < 2 * MiB + 123; ++i) big += char('a' + i * 31 % 26);
  write_file(t / "in/a.txt", big);
  write_file(t / "in/b.txt", std::string(MiB, 'b'));  // ends exactly at a piece boundary
  write_file(t / "in/c.txt", "c");
  auto o = options(t);
  o.val_fraction = 0.0;
  auto s = preprocess(o);
  EXPECT_EQ(s["documents"], 3);
  const uint64_t a = big.size() + 1, b = MiB + 1;
  EXPECT_EQ(read_file(t / "out/train/shard-00000.idx"), u64le({0, a, a + b, a + b + 2}));
  std::string want = big + '\0' + std::string(MiB, 'b') + '\0' + "c" + '\0';
  EXPECT_EQ(read_file(t / "out/train/shard-00000.bin"), u16le(want));

  big[MiB + 5] = '\0';
  write_file(t / "in/a.txt", big);
  o.overwrite = true;
  EXPECT_EQ(error_of([&] { preprocess(o); }).rfind(t / "in/a.txt: token " + std::to_string(MiB + 5) + " is the end-of-document id 0", 0), 0u);
}

std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = read_file(e.path().string());
  return files;
}

TEST(Preprocess, SameBytesForAnyWorkerCount) {
  TempDir t;
  std::string lines;
  for (int i = 0; i < 300; ++i) lines += "{\"text\": \"document " + std::to_string(i * 7919 % 1000) + " " + std::string(size_t(i % 37), 'z') + "\"}\n";
  write_file(t / "in/b/docs.jsonl", lines);
  for (int i = 0; i < 20; ++i) write_file(t / ("in/a/f" + std::to_string(i) + ".txt"), std::string(size_t(50 + i * 13), char('a' + i)));
  auto o = options(t);
  o.shard_tokens = 1000;
  o.val_fraction = 0.1;
  o.workers = 1;
  o.output = t / "w1";
  preprocess(o);
  o.workers = 4;
  o.output = t / "w4";
  preprocess(o);
  auto a = tree(t / "w1"), b = tree(t / "w4");
  EXPECT_GT(a.size(), 6u);  // several shards per split
  EXPECT_EQ(a, b);
}

TEST(Preprocess, InputsAreReadInSortedPathOrder) {
  TempDir t;
  small_corpus(t);
  auto o = options(t);
  o.inputs = {t / "in/sub", t / "in/a.txt", t / "in"};  // a.txt and sub/b.jsonl named twice
  preprocess(o);
  o.inputs = {t / "in"};
  o.output = t / "out2";
  preprocess(o);
  EXPECT_EQ(tree(t / "out"), tree(t / "out2"));
}

TEST(Preprocess, InputErrors) {
  TempDir t;
  auto o = options(t);
  o.inputs = {t / "missing"};
  EXPECT_EQ(error_of([&] { preprocess(o); }), t / "missing" + ": no such file or directory");

  write_file(t / "md/readme.md", "no text files here");
  o.inputs = {t / "md"};
  EXPECT_NE(error_of([&] { preprocess(o); }).find("no .txt or .jsonl files found"), std::string::npos);

  write_file(t / "empty/a.txt", "");
  write_file(t / "empty/b.jsonl", "{\"text\": \"\"}\n");
  o.inputs = {t / "empty"};
  EXPECT_NE(error_of([&] { preprocess(o); }).find("corpus is empty"), std::string::npos);

  write_file(t / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  o.inputs = {t / "bad.jsonl"};
  std::string msg = error_of([&] { preprocess(o); });
  EXPECT_EQ(msg.rfind(t / "bad.jsonl:2: not valid JSON", 0), 0u) << msg;

  write_file(t / "key.jsonl", "{\"content\": \"ok\"}\n");
  o.inputs = {t / "key.jsonl"};
  msg = error_of([&] { preprocess(o); });
  EXPECT_EQ(msg.rfind(t / "key.jsonl:1: no string field \"text\"", 0), 0u) << msg;
  o.text_key = "content";
  EXPECT_NO_THROW(preprocess(o));
  o.text_key = "text";

  write_file(t / "nul.txt", std::string("a\0b", 3));
  o.inputs = {t / "nul.txt"};
  o.overwrite = true;
  msg = error_of([&] { preprocess(o); });
  EXPECT_EQ(msg.rfind(t / "nul.txt: token 1 is the end-of-document id 0", 0), 0u) << msg;

  write_file(t / "tiny.txt", "");  // explicit files of any extension are text
  o.inputs = {t / "tiny.txt", t / "key.jsonl"};
  o.text_key = "content";
  o.val_fraction = 0.5;
  EXPECT_NO_THROW(preprocess(o));  // "ok\0": val ceil(0.5 * 3) = 2 tokens, train 1
  o.val_fraction = 0.6;
  EXPECT_NE(error_of([&] { preprocess(o); }).find("--val-fraction 0.6: out of range"), std::string::npos);
  o.val_fraction = 0.05;
  write_file(t / "sp.model", "not a protobuf");
  o.tokenizer = t / "sp.model";
  EXPECT_EQ(error_of([&] { preprocess(o); }),
            t / "sp.model" + ": not a SentencePiece model (the file does not parse as a protobuf; expected a "
            "SentencePiece .model protobuf as spm_train writes it)");

  // Failed runs leave no temporary folder behind.
  for (auto& e : fs::directory_iterator(t.path)) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);
}

TEST(Preprocess, OutputFolderRules) {
  TempDir t;
  small_corpus(t);
  auto o = options(t);
  preprocess(o);
  EXPECT_EQ(error_of([&] { preprocess(o); }), t / "out" + ": already exists (pass --overwrite to replace it)");
  o.overwrite = true;
  write_file(t / "out/stale.txt", "from an earlier run");
  preprocess(o);
  EXPECT_FALSE(fs::exists(t / "out/stale.txt"));
  EXPECT_TRUE(fs::exists(t / "out/train/manifest.json"));

  write_file(t / "mine/thesis.tex", "precious");
  o.output = t / "mine/";
  EXPECT_NE(error_of([&] { preprocess(o); }).find("is not the output of moe preprocess"), std::string::npos);
  EXPECT_TRUE(fs::exists(t / "mine/thesis.tex"));

  o.output = t / "new/nested/dir/";  // parents are created; the trailing slash is ignored
  preprocess(o);
  EXPECT_TRUE(fs::exists(t / "new/nested/dir/val/manifest.json"));
}

}  // namespace
}  // namespace moe
