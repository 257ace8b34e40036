// The input side of preprocess: compressed files (gzip, zstd: several members/frames, truncated,
// corrupt), the .jsonl field scanner, invalid-UTF-8 counting, document pieces and resume positions
// (DocumentReader), and write errors on a full disk (OutFile on /dev/full).
#include <gtest/gtest.h>

#include <random>

#include "data_pipeline/bpe.h"
#include "data_pipeline/bpe_train.h"
#include "data_pipeline/corpus.h"
#include "data_pipeline/input_stream.h"
#include "data_pipeline/jsonl.h"
#include "data_pipeline/out_file.h"
#include "data_pipeline/pretokenize.h"
#include "test_data_compress.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::TempDir;
using test::write_file;

using test::gzip;
using test::zstd;

std::string read_all(const std::string& path, size_t chunk = 1000) {
  InputStream in(path, compression_of(path));
  std::string out, buf(chunk, '\0');
  for (size_t n; (n = in.read(buf.data(), buf.size())) > 0;) out.append(buf.data(), n);
  EXPECT_EQ(in.offset(), out.size());
  return out;
}

std::string sample(size_t n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < n) s += "word" + std::to_string(rng() % 1000) + (rng() % 7 ? " " : "\n");
  return s;
}

TEST(InputStream, PlainGzipZstdGiveTheSameBytes) {
  TempDir t;
  const std::string text = sample(300000);
  write_file(t / "a.txt", text);
  write_file(t / "a.txt.gz", gzip(text.substr(0, 1000)) + gzip(text.substr(1000)));  // two members
  write_file(t / "a.txt.zst", zstd(text.substr(0, 5000)) + zstd(text.substr(5000)));  // two frames
  for (const char* f : {"a.txt", "a.txt.gz", "a.txt.zst"}) {
    EXPECT_EQ(read_all(t / f), text) << f;
    EXPECT_EQ(read_all(t / f, 1), text.substr(0, text.size())) << f;
    InputStream in(t / f, compression_of(f));
    in.skip(123456);
    std::string rest(10, '\0');
    ASSERT_EQ(in.read(rest.data(), 10), 10u);
    EXPECT_EQ(rest, text.substr(123456, 10)) << f;
  }
  EXPECT_EQ(strip_compression("x/a.jsonl.zst"), "x/a.jsonl");
  write_file(t / "empty.gz", "");
  EXPECT_EQ(read_all(t / "empty.gz"), "");
}

TEST(InputStream, TruncatedAndCorruptFilesAreErrors) {
  TempDir t;
  const std::string text = sample(100000);
  std::string gz = gzip(text), zs = zstd(text);
  write_file(t / "cut.gz", gz.substr(0, gz.size() / 2));
  write_file(t / "cut.zst", zs.substr(0, zs.size() / 2));
  EXPECT_NE(error_of([&] { read_all(t / "cut.gz"); }).find("cut.gz: truncated gzip file"), std::string::npos);
  EXPECT_NE(error_of([&] { read_all(t / "cut.zst"); }).find("cut.zst: truncated zstd file"), std::string::npos);
  gz[gz.size() / 2] ^= 0x55;
  zs[zs.size() / 2] ^= 0x55;
  write_file(t / "bad.gz", gz);
  write_file(t / "bad.zst", zs);
  write_file(t / "plain.gz", "this is not gzip");
  for (const char* f : {"bad.gz", "plain.gz"})
    EXPECT_NE(error_of([&] { read_all(t / f); }).find(": corrupt gzip data near byte"), std::string::npos) << f;
  std::string msg = error_of([&] { read_all(t / "bad.zst"); });
  EXPECT_TRUE(msg.find("corrupt zstd data") != std::string::npos || msg.find("truncated zstd") != std::string::npos) << msg;
  EXPECT_NE(error_of([&] { InputStream(t / "missing.gz", Compression::Gzip); }).find("missing.gz: cannot open"),
            std::string::npos);
}

TEST(Jsonl, ExtractsTheFieldAndRejectsMalformedLines) {
  std::string text, why;
  auto field = [&](std::string_view line, std::string_view key = "text") { return jsonl_field(line, key, text, why); };
  EXPECT_EQ(field(R"({"id": 1, "text": "a\"b\\c\nd\u00e9\ud83d\ude00", "meta": {"x": [1, 2.5e-3, null, true]}})"),
            JsonlStatus::Ok);
  EXPECT_EQ(text, "a\"b\\c\nd\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(field(R"({"text": "first", "text": "last"})"), JsonlStatus::Ok);
  EXPECT_EQ(text, "last");  // as Python's json
  EXPECT_EQ(field("{\"text\": \"raw \xFF\xFE bytes\"}"), JsonlStatus::Ok);
  EXPECT_EQ(text, "raw \xFF\xFE bytes");  // kept as they are
  EXPECT_EQ(field(R"({"text": "lone \ud800 x"})"), JsonlStatus::Ok);
  EXPECT_EQ(text, "lone \xED\xA0\x80 x");  // WTF-8
  EXPECT_EQ(field(R"({"body": "x"})"), JsonlStatus::NoField);
  EXPECT_EQ(field(R"({"text": 7})"), JsonlStatus::NoField);
  EXPECT_EQ(field(R"({"text": "x", "text": null})"), JsonlStatus::NoField);
  EXPECT_EQ(field(R"(["text", "x"])"), JsonlStatus::NoField);
  EXPECT_EQ(field(R"({"nested": {"text": "x"}})"), JsonlStatus::NoField);
  for (const char* bad : {R"({"text": "x")", R"({"text": "x"} extra)", R"({"text" "x"})", R"({text: "x"})",
                          R"({"text": "x",})", R"({"text": "\q"})", R"({"text": 01})", R"({"a": tru})", "",
                          "{\"text\": \"tab\there\"}", R"({"text": "\u12G4"})"}) {
    EXPECT_EQ(field(bad), JsonlStatus::Malformed) << bad;
    EXPECT_NE(why.find("column"), std::string::npos) << bad << " -> " << why;
  }
  EXPECT_EQ(field(R"({"text": "x"} )"), JsonlStatus::Ok);
  std::string deep(600, '[');
  EXPECT_EQ(field("{\"a\": " + deep + "}"), JsonlStatus::Malformed);
  EXPECT_NE(why.find("nesting deeper than 512"), std::string::npos) << why;
  // The limit is exact: the object and 511 arrays nest 512 deep (accepted), one more is refused.
  auto nested = [](int arrays) { return "{\"text\": \"x\", \"a\": " + std::string(arrays, '[') + std::string(arrays, ']') + "}"; };
  EXPECT_EQ(field(nested(kJsonlMaxDepth - 1)), JsonlStatus::Ok) << why;
  EXPECT_EQ(field(nested(kJsonlMaxDepth)), JsonlStatus::Malformed);
  EXPECT_EQ(jsonl_problem(JsonlStatus::NoField, "", "body"),
            "no string field \"body\" (expected {\"body\": \"...\"} per line; --text-key picks the field)");
}

TEST(Jsonl, CountsInvalidUtf8Bytes) {
  EXPECT_EQ(count_invalid_utf8("plain ascii"), 0u);
  EXPECT_EQ(count_invalid_utf8("\xC3\xA9\xE6\x9D\xB1\xF0\x9F\x98\x80"), 0u);  // é 東 😀
  EXPECT_EQ(count_invalid_utf8("\xFF"), 1u);
  EXPECT_EQ(count_invalid_utf8("a\x80z"), 1u);            // lone continuation byte
  EXPECT_EQ(count_invalid_utf8("\xE6\x9D"), 2u);          // truncated character: both bytes
  EXPECT_EQ(count_invalid_utf8("\xC0\xAF"), 2u);          // overlong
  EXPECT_EQ(count_invalid_utf8("\xED\xA0\x80"), 3u);      // a surrogate
  EXPECT_EQ(count_invalid_utf8("\xF4\x90\x80\x80"), 4u);  // above U+10FFFF
}

std::vector<Document> read_docs(const std::vector<CorpusFile>& files, const ReaderOptions& o, InputPosition from = {}) {
  DocumentReader r(files, o, from);
  std::vector<Document> all, batch;
  while (r.next_batch(1 << 16, batch))
    for (auto& d : batch) all.push_back(std::move(d));
  return all;
}

// Each whole document, put back together from its pieces.
std::vector<std::string> whole(const std::vector<Document>& docs) {
  std::vector<std::string> out;
  std::string cur;
  for (const auto& d : docs) {
    cur += d.text;
    if (d.last) out.push_back(cur), cur.clear();
  }
  return out;
}

TEST(DocumentReader, SplitDocsOnBlankLines) {
  TempDir t;
  write_file(t / "c/a.txt", "\n \nfirst para\nline two\n\n\n  indented para\r\n\r\n \t \nlast\n  \n");
  write_file(t / "c/b.txt", "no newline at the end");
  write_file(t / "c/c.txt", "\n\n  \n");  // no documents at all
  auto files = list_corpus({t / "c"});
  ReaderOptions o;
  o.split_docs = true;
  auto docs = read_docs(files, o);
  EXPECT_EQ(whole(docs), (std::vector<std::string>{"first para\nline two", "  indented para", "last", "no newline at the end"}));
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0].line, 3);
  EXPECT_EQ(docs[1].line, 7);
  EXPECT_EQ(docs[2].line, 10);
  DocumentReader r(files, o);
  EXPECT_EQ(r.where(docs[1]), t / "c/a.txt:7");
  o.split_docs = false;  // without it each file is one document, as it is
  EXPECT_EQ(whole(read_docs(files, o))[0], "\n \nfirst para\nline two\n\n\n  indented para\r\n\r\n \t \nlast\n  \n");
}

// Every piece's position reopens the reader exactly there: the rest comes out the same.
void expect_resumable(const std::vector<CorpusFile>& files, const ReaderOptions& o) {
  auto all = read_docs(files, o);
  for (size_t i = 0; i < all.size(); i += std::max<size_t>(1, all.size() / 8)) {
    auto rest = read_docs(files, o, all[i].at);
    ASSERT_EQ(rest.size(), all.size() - i) << i;
    for (size_t k = 0; k < rest.size(); ++k) {
      ASSERT_EQ(rest[k].text, all[i + k].text) << i << " " << k;
      ASSERT_EQ(rest[k].last, all[i + k].last);
      ASSERT_EQ(rest[k].line, all[i + k].line);
    }
  }
}

TEST(DocumentReader, PiecesAndResumePositions) {
  TempDir t;
  std::string big = sample(size_t(5) << 18, 7), paras;  // pieces of 256 KiB below
  for (int i = 0; i < 40; ++i) paras += sample(size_t(1000 + i * 15000), uint32_t(i)) + "\n\n";
  std::string jsonl;
  for (int i = 0; i < 300; ++i) jsonl += "{\"text\": \"doc " + std::to_string(i) + "\"}\n" + (i % 50 ? "" : "\n");
  write_file(t / "c/1.txt", big);
  write_file(t / "c/2.txt.gz", gzip(paras));
  write_file(t / "c/3.jsonl.zst", zstd(jsonl));
  auto files = list_corpus({t / "c"});
  ASSERT_EQ(files.size(), 3u);
  EXPECT_TRUE(files[2].jsonl);
  for (bool bpe : {false, true}) {
    ReaderOptions o;
    o.piece_bytes = 1 << 18;
    o.cuts = bpe ? CutRule::PreTokens : CutRule::Anywhere;
    o.split_docs = true;
    o.raw_jsonl = true;
    auto docs = read_docs(files, o);
    auto w = whole(docs);
    EXPECT_EQ(w.size(), 1 + 40 + 300u);
    size_t longest = 0;
    for (const auto& d : docs) longest = std::max(longest, d.text.size());
    EXPECT_LE(longest, bpe ? size_t(16) << 18 : size_t(1) << 18);
    EXPECT_GT(docs.size(), w.size() + 10);  // long documents came in pieces
    if (bpe)  // ASCII text: cut only as "x|\n", "x| word" or "x\n|word" (pretokenize.h)
      for (const auto& d : docs)
        if (!d.last) {
          const unsigned char c = static_cast<unsigned char>(d.text.back());
          EXPECT_TRUE(isgraph(c) || c == '\n') << d.text.size();
        }
    expect_resumable(files, o);
  }
}

// Where preprocess and `moe bench tokenizer` cut text for BPE (safe_cut), the ids of the parts
// are the ids of the whole, for every pre-tokenizer: checked at every cut of space-heavy text.
TEST(SafeCut, PartsEncodeLikeTheWhole) {
  std::mt19937 rng(11);
  const char* bits[] = {"a", "word", "Zed", " ", " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "7", "2024", ".", ",", "!?",
                        "é", "中", "\u3000", "\u00a0", "😀", "\xff"};
  std::string corpus;
  while (corpus.size() < 20000) corpus += bits[rng() % std::size(bits)];
  for (PreTokenizer pre : {PreTokenizer{SplitPattern::Gpt2, false}, PreTokenizer{SplitPattern::Llama3, false},
                           PreTokenizer{SplitPattern::Gpt2, true}}) {
    PieceCounts counts;
    count_pieces({corpus}, pre, counts);
    auto tok = parse_bpe_tokenizer(tokenizer_json(learn_bpe(counts, 600, {"<|endoftext|>"}), pre).dump(), "t", "h");
    int cuts = 0;
    for (int trial = 0; trial < 40; ++trial) {
      std::string text;
      while (text.size() < 300) text += bits[rng() % std::size(bits)];
      const auto whole = tok->encode(text);
      for (size_t c = safe_cut(text, 0); c < text.size(); c = safe_cut(text, c + 1), ++cuts) {
        auto a = tok->encode(std::string_view(text).substr(0, c)), b = tok->encode(std::string_view(text).substr(c));
        a.insert(a.end(), b.begin(), b.end());
        ASSERT_EQ(a, whole) << "cut at " << c << " of " << text;
      }
    }
    EXPECT_GT(cuts, 100);
  }
}

TEST(OutFile, FullDiskIsAnErrorNamingTheFile) {
  OutFile f = OutFile::create("/dev/full");
  std::string msg = error_of([&] {
    std::string block(size_t(3) << 20, 'x');  // larger than the buffer: written at once
    f.write(block.data(), block.size());
  });
  EXPECT_EQ(msg, "/dev/full: write failed (No space left on device)");
  OutFile g = OutFile::create("/dev/full");
  g.write("small", 5);  // buffered ...
  EXPECT_EQ(error_of([&] { g.sync(); }), "/dev/full: write failed (No space left on device)");  // ... fails at the sync
  TempDir t;
  EXPECT_NE(error_of([&] { OutFile::create(t / "no/such/dir/x"); }).find("cannot open for writing"), std::string::npos);
}

}  // namespace
}  // namespace moe
