// preprocess's inputs and reports: compressed files, --split-docs, --skip-bad-lines, invalid UTF-8
// (kept and counted), the token dtype, text bytes per split, and BPE documents read in pieces
// giving the ids of the whole document.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "data_pipeline/bpe_train.h"
#include "data_pipeline/pretokenize.h"
#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "test_data_compress.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::read_file;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

using test::gzip;
using test::zstd;

std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = read_file(e.path().string());
  return files;
}

// All tokens of a split.
std::vector<int32_t> tokens(const std::string& dir, const std::string& split = "train") {
  auto d = TokenDataset::open(dir, split);
  std::vector<int32_t> v(size_t(d.num_tokens()));
  d.read(0, d.num_tokens(), v.data());
  return v;
}

std::vector<int32_t> ids(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

PreprocessOptions options(const TempDir& t, const std::string& out) {
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / out;
  o.val_fraction = 0;
  o.workers = 2;
  o.shard_tokens = 1000;
  o.progress_seconds = 0;
  return o;
}

TEST(PreprocessInputs, CompressedFilesGiveTheSameShards) {
  TempDir t;
  std::string text, lines;
  for (int i = 0; i < 3000; ++i) text += "line " + std::to_string(i * 37 % 1000) + (i % 10 ? "\n" : "\n\n");
  for (int i = 0; i < 500; ++i) lines += "{\"text\": \"doc " + std::to_string(i) + "\"}\n";
  write_file(t / "in/a.txt", text);
  write_file(t / "in/b.jsonl", lines);
  auto o = options(t, "plain");
  o.split_docs = true;
  preprocess(o);
  fs::remove_all(t / "in");
  write_file(t / "in/a.txt.gz", gzip(text));
  write_file(t / "in/b.jsonl.zst", zstd(lines));
  o.output = t / "packed";
  auto s = preprocess(o);
  EXPECT_EQ(s["files"], 2);
  EXPECT_EQ(s["documents"], 301 + 500);  // blocks: "line 0", 299 of ten lines, the last nine
  EXPECT_EQ(tree(t / "plain"), tree(t / "packed"));

  write_file(t / "in/a.txt.gz", gzip(text).substr(0, 100));
  o.output = t / "cut";
  EXPECT_NE(error_of([&] { preprocess(o); }).find("a.txt.gz: truncated gzip file"), std::string::npos);
}

TEST(PreprocessInputs, SplitDocs) {
  TempDir t;
  write_file(t / "in/a.txt", "\nOne.\nStill one.\n\n  \nTwo.\r\n\r\nThree.");
  auto o = options(t, "out");
  o.split_docs = true;
  auto s = preprocess(o);
  EXPECT_EQ(s["documents"], 3);
  EXPECT_EQ(tokens(t / "out"), ids(std::string("One.\nStill one.\0Two.\0Three.\0", 28)));
  o.split_docs = false;
  o.output = t / "whole";
  EXPECT_EQ(preprocess(o)["documents"], 1);
  // A NUL is reported at the document's own line with --split-docs.
  write_file(t / "in/a.txt", std::string("ok\n\nbad\0\n", 9));
  o.split_docs = true;
  o.output = t / "nul";
  EXPECT_EQ(error_of([&] { preprocess(o); }).rfind(t / "in/a.txt:3: token 3 is the end-of-document id 0", 0), 0u);
}

TEST(PreprocessInputs, BadJsonlLinesAreErrorsOrCounted) {
  TempDir t;
  write_file(t / "in/a.jsonl",
             "{\"text\": \"good\"}\n"
             "{\"text\": \"broken\"\n"
             "{\"body\": \"no text key\"}\n"
             "{\"text\": 42}\n"
             "[1, 2]\n"
             "{\"text\": \"fine\"}\n");
  auto o = options(t, "out");
  std::string msg = error_of([&] { preprocess(o); });
  EXPECT_EQ(msg.rfind(t / "in/a.jsonl:2: not valid JSON: unterminated object", 0), 0u) << msg;
  o.skip_bad_lines = true;
  testing::internal::CaptureStderr();
  auto s = preprocess(o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s["bad_lines"], 4);
  EXPECT_EQ(s["documents"], 2);
  EXPECT_EQ(s["first_bad_line"].get<std::string>().rfind(t / "in/a.jsonl:2: not valid JSON", 0), 0u);
  EXPECT_NE(err.find("preprocess: skipped 4 malformed line(s); the first: " + t / "in/a.jsonl:2"), std::string::npos) << err;
  EXPECT_EQ(tokens(t / "out"), ids(std::string("good\0fine\0", 10)));

  // A missing key alone, without --skip-bad-lines: file:line and what was expected.
  write_file(t / "in/a.jsonl", "{\"text\": \"a\"}\n\n{\"content\": \"b\"}\n");
  o.skip_bad_lines = false;
  o.output = t / "key";
  EXPECT_EQ(error_of([&] { preprocess(o); }),
            t / "in/a.jsonl" + ":3: no string field \"text\" (expected {\"text\": \"...\"} per line; --text-key picks the field)");
}

TEST(PreprocessInputs, InvalidUtf8IsKeptAndCounted) {
  TempDir t;
  const std::string bad_txt = "caf\xC3\xA9 \xFF\xFE ok";  // é is fine; FF FE are not
  write_file(t / "in/a.txt", bad_txt);
  write_file(t / "in/b.jsonl", "{\"text\": \"raw \x80 byte\"}\n{\"text\": \"lone \\udc00\"}\n{\"text\": \"clean\"}\n");
  auto o = options(t, "out");
  testing::internal::CaptureStderr();
  auto s = preprocess(o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s["invalid_utf8_documents"], 3);
  EXPECT_EQ(s["invalid_utf8_bytes"], 2 + 1 + 3);
  EXPECT_NE(err.find("3 document(s) hold invalid UTF-8 (6 bytes), kept as bytes"), std::string::npos) << err;
  std::string want = bad_txt + '\0' + "raw \x80 byte" + '\0' + "lone \xED\xB0\x80" + '\0' + "clean" + '\0';
  EXPECT_EQ(tokens(t / "out"), ids(want));
}

// A byte-level BPE tokenizer trained on `text`, written as a tokenizer.json.
std::string train_tokenizer(const TempDir& t, const std::string& text, int64_t vocab) {
  PieceCounts counts;
  count_pieces({text}, PreTokenizer{}, counts);
  std::string path = t / "tok.json";
  write_file(path, tokenizer_json(learn_bpe(counts, vocab, {"<|endoftext|>"}), PreTokenizer{}).dump());
  return path;
}

TEST(PreprocessInputs, BpePiecesGiveTheIdsOfTheWholeDocument) {
  TempDir t;
  std::mt19937 rng(3);
  std::string doc;  // 3 MiB: read in about 1 MiB pieces, cut only where BPE allows
  const char* words[] = {"alpha", "beta", "gamma", " ", "  ", "\n", "12", "!", "é"};
  while (doc.size() < (size_t(3) << 20)) doc += words[rng() % 9];
  write_file(t / "in/a.txt", doc);
  auto tok = make_tokenizer(train_tokenizer(t, doc.substr(0, 100000), 400));
  auto o = options(t, "out");
  o.tokenizer = t / "tok.json";
  o.shard_tokens = 1 << 20;
  auto s = preprocess(o);
  std::vector<uint32_t> want = tok->encode(doc);
  want.push_back(tok->eos_id());
  auto got = tokens(t / "out");
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin()));
  auto m = nlohmann::json::parse(read_file(t / "out/train/manifest.json"));
  EXPECT_EQ(m["bytes"], doc.size());
  EXPECT_EQ(s["text_bytes"], doc.size());
}

TEST(PreprocessInputs, TextBytesPerSplit) {
  TempDir t;
  write_file(t / "in/a.txt", std::string(1000, 'a'));
  write_file(t / "in/b.txt", std::string(500, 'b'));
  auto o = options(t, "out");
  o.val_fraction = 0.2;  // 1502 tokens: val = ceil(300.4) = 301 = 300 b + EOS
  preprocess(o);
  auto train = nlohmann::json::parse(read_file(t / "out/train/manifest.json"));
  auto val = nlohmann::json::parse(read_file(t / "out/val/manifest.json"));
  EXPECT_EQ(val["tokens"], 301);
  EXPECT_EQ(val["bytes"], 300);  // the EOS is not text
  EXPECT_EQ(train["bytes"], 1200);
  EXPECT_EQ(train["format"], "shards");
}

TEST(PreprocessInputs, VocabularyTooLargeForTheDtype) {
  TempDir t;
  write_file(t / "in/a.txt", "some text");
  // Byte-level BPE whose EOS has id 70000: 70001 ids need 4 bytes.
  nlohmann::json j = nlohmann::json::parse(read_file(train_tokenizer(t, "some text", 260)));
  j["added_tokens"][0]["id"] = 70000;
  j["model"]["vocab"]["<|endoftext|>"] = 70000;
  write_file(t / "big.json", j.dump());
  auto o = options(t, "out");
  o.tokenizer = t / "big.json";
  o.dtype = "u16";
  EXPECT_EQ(error_of([&] { preprocess(o); }),
            t / "big.json" + ": a vocabulary of 70001 ids does not fit u16 tokens (expected at most 65536 ids; use --dtype u32 or auto)");
  EXPECT_FALSE(fs::exists(t / "out.tmp"));
  o.dtype = "auto";
  preprocess(o);
  auto m = nlohmann::json::parse(read_file(t / "out/train/manifest.json"));
  EXPECT_EQ(m["dtype"], "u32");
  EXPECT_EQ(fs::file_size(t / "out/train/shard-00000.bin"), 4 * uint64_t(m["tokens"].get<int64_t>()));
  EXPECT_EQ(tokens(t / "out").back(), 70000);
  o.dtype = "u8";
  EXPECT_EQ(error_of([&] { preprocess(o); }), "--dtype u8: unknown (expected auto, u16 or u32)");
  o.dtype = "auto";
  o.format = "parquet";
  EXPECT_EQ(error_of([&] { preprocess(o); }), "--format parquet: unknown (expected shards or megatron)");
}

TEST(PreprocessInputs, UnreadableInputsAndTokenizerFiles) {
  TempDir t;
  write_file(t / "in/a.txt", "text");
  auto o = options(t, "out");
  o.inputs = {"/dev/null"};
  EXPECT_EQ(error_of([&] { preprocess(o); }), "/dev/null: not a regular file or folder");
  fs::create_symlink(t / "gone.txt", t / "dangling.txt");
  o.inputs = {t / "dangling.txt"};
  EXPECT_EQ(error_of([&] { preprocess(o); }), t / "dangling.txt" + ": no such file or directory");
  o.inputs = {t / "in"};
  write_file(t / "bad.json", "{\"model\": {\"type\": \"WordPiece\"}}");
  o.tokenizer = t / "bad.json";
  EXPECT_NE(error_of([&] { preprocess(o); }).find("model.type is 'WordPiece' (expected 'BPE'"), std::string::npos);
  write_file(t / "bad.json", "{\"model\": ");
  EXPECT_EQ(error_of([&] { preprocess(o); }).rfind(t / "bad.json", 0), 0u);
  EXPECT_FALSE(fs::exists(t / "out.tmp"));
  EXPECT_FALSE(fs::exists(t / "out"));
}

}  // namespace
}  // namespace moe
