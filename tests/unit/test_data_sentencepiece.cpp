// SentencePiece .model files through libsentencepiece: ids and decoded text equal spm_encode's and
// spm_decode's (golden files from tests/golden/sentencepiece/make_models.sh, and live where the
// tools are installed); decode(encode(x)) == x for any bytes with a Llama-style model; the text
// after a cut encodes as inside the whole; token_text; malformed files; preprocess with a long
// document read in pieces, any --workers, and resumed after stops.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <thread>

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

std::string golden(const std::string& name) {
  return std::string(std::getenv("MOE_SOURCE_DIR")) + "/tests/golden/sentencepiece/" + name;
}

const char* const kModels[] = {"llama_bpe", "unigram", "suffix"};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string ids_line(const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

std::vector<uint32_t> parse_ids(const std::string& line) {
  std::vector<uint32_t> ids;
  std::istringstream in(line);
  for (uint32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Random text from words, whitespace runs, digits, punctuation and non-ASCII characters (valid
// UTF-8, no U+2581: SentencePiece reads that character as a space).
std::string soup(std::mt19937& rng, size_t bytes) {
  const char* bits[] = {"the", "king", "Romeo", "thou", "art", " ", " ", " ", "  ", "   ", "\n", "\t", ",", ".",
                        "!?", "'s", "2024", "7", "é", "中文", "😀", "\u00a0", "\u3000", "<s>", "</s>", "\xef\xbf\xbd"};
  std::string s;
  while (s.size() < bytes) s += bits[rng() % std::size(bits)];
  return s;
}

TEST(SentencePiece, GoldenIdsAndTextFromSpmEncodeAndDecode) {
  const auto sample = lines_of(read_file(golden("sample.txt")));
  ASSERT_GT(sample.size(), 15u);
  for (const char* m : kModels) {
    auto tok = make_tokenizer(golden(std::string(m) + ".model"));
    const auto ids = lines_of(read_file(golden(std::string(m) + ".ids")));
    const auto text = lines_of(read_file(golden(std::string(m) + ".decoded.txt")));
    ASSERT_EQ(ids.size(), sample.size()) << m;
    ASSERT_EQ(text.size(), sample.size()) << m;
    for (size_t i = 0; i < sample.size(); ++i) {
      EXPECT_EQ(ids_line(tok->encode(sample[i])), ids[i]) << m << " line " << i + 1 << ": " << sample[i];
      EXPECT_EQ(tok->decode(parse_ids(ids[i])), text[i]) << m << " line " << i + 1;
    }
  }
  // The last line, 12 kB, is encoded in parts (sentencepiece.cpp) and still gives spm_encode's ids.
  EXPECT_GT(sample.back().size(), 10000u);
  // The Llama-style model gives every line back; the unigram one drops extra whitespace, as
  // SentencePiece does.
  EXPECT_EQ(read_file(golden("llama_bpe.decoded.txt")), read_file(golden("sample.txt")));
  EXPECT_NE(read_file(golden("unigram.decoded.txt")), read_file(golden("sample.txt")));
}

// Runs `cmd` with `input` on stdin (through a file) and returns its stdout.
std::string run(const std::string& cmd, const std::string& input, const TempDir& t) {
  write_file(t / "stdin.txt", input);
  FILE* p = popen((cmd + " < '" + t / "stdin.txt" + "'").c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(SentencePiece, SameAsSpmEncodeOnRandomText) {
  if (std::system("command -v spm_encode >/dev/null 2>&1 && command -v spm_decode >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "spm_encode / spm_decode not installed (Debian package sentencepiece); the golden files cover this";
  TempDir t;
  std::mt19937 rng(3);
  std::string text;
  for (int i = 0; i < 300; ++i) text += soup(rng, 1 + rng() % 200) + "\n";
  for (char& c : text)
    if (c == '\n' && rng() % 4) c = ' ';  // fewer, longer lines
  for (int i = 0; i < 3; ++i) {  // long ones, which encode() hands to libsentencepiece in parts
    std::string line = soup(rng, 30000);
    std::replace(line.begin(), line.end(), '\n', ' ');
    text += line + "\n";
  }
  const auto lines = lines_of(text);
  for (const char* m : kModels) {
    const std::string model = golden(std::string(m) + ".model");
    auto tok = make_tokenizer(model);
    const auto want = lines_of(run("spm_encode --output_format=id --model='" + model + "'", text, t));
    ASSERT_EQ(want.size(), lines.size()) << m;
    std::string ours;
    for (size_t i = 0; i < lines.size(); ++i) {
      ASSERT_EQ(ids_line(tok->encode(lines[i])), want[i]) << m << ": " << lines[i];
      ours += ids_line(tok->encode(lines[i])) + "\n";
    }
    const auto decoded = lines_of(run("spm_decode --input_format=id --model='" + model + "'", ours, t));
    ASSERT_EQ(decoded.size(), lines.size()) << m;
    for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(tok->decode(parse_ids(want[i])), decoded[i]) << m;
  }
}

TEST(SentencePiece, Identity) {
  const std::string path = golden("llama_bpe.model");
  auto tok = make_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->eos_id(), 2u);  // </s>
  EXPECT_EQ(tok->name(), path);
  EXPECT_EQ(tok->hash(), sha256_hex(read_file(path)));
  EXPECT_EQ(tok->cut_rule(), CutRule::BeforeSpace);
  EXPECT_EQ(make_tokenizer(golden("unigram.model"))->cut_rule(), CutRule::BeforeSpace);
  EXPECT_EQ(make_tokenizer(golden("suffix.model"))->cut_rule(), CutRule::Nowhere);  // pieces like "word▁"
  EXPECT_EQ(make_tokenizer(golden("unigram.model"))->eos_id(), 2u);
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_EQ(tok->decode({}), "");
}

// With byte fallback, bytes that are not UTF-8 become byte pieces instead of SentencePiece's
// U+FFFD, and decode gives them back; valid text keeps SentencePiece's ids.
TEST(SentencePiece, RoundTripsAnyBytesWithByteFallback) {
  auto tok = make_tokenizer(golden("llama_bpe.model"));
  const uint32_t byte0 = 3;  // <0x00> follows <unk>, <s>, </s>
  EXPECT_EQ(tok->encode("\xff"), (std::vector<uint32_t>{942, byte0 + 0xff}));  // "▁" (dummy prefix), <0xFF>
  EXPECT_EQ(tok->decode({942, byte0 + 0xff}), "\xff");
  EXPECT_EQ(tok->decode({byte0 + 0xe3, byte0 + 0x81}), "\xe3\x81");  // an unfinished character
  EXPECT_EQ(tok->decode({byte0 + 0xe3, byte0 + 0x81, byte0 + 0x82}), "\xe3\x81\x82");  // a whole one
  const std::string mixed = "caf\xc3\xa9 \xff\xfe\x80 \xe2\x82 bytes\xe3\x81\x82 ok";
  EXPECT_EQ(tok->decode(tok->encode(mixed)), mixed);
  // Around the bad bytes the ids are SentencePiece's: " ok" at the end as in a clean text.
  auto tail = tok->encode_continuation(" ok");
  auto ids = tok->encode(mixed);
  ASSERT_GE(ids.size(), tail.size());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), ids.end() - ptrdiff_t(tail.size())));

  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string x;
    const size_t n = rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      switch (rng() % 4) {
        case 0: x += char(rng() % 256); break;               // any byte
        case 1: x += char(0x80 + rng() % 0x40); break;       // a continuation byte
        case 2: x += soup(rng, 1); break;                    // valid text
        default: x += char(' ' + rng() % 95); break;         // ASCII
      }
    }
    if (x.find("\xe2\x96\x81") != std::string::npos) continue;  // U+2581 decodes as a space
    ASSERT_EQ(tok->decode(tok->encode(x)), x) << ids_line(tok->encode(x));
  }
}

// Where CutRule::BeforeSpace allows a cut, encode(head) + encode_continuation(tail) == encode(whole):
// what lets preprocess tokenise a long document in pieces.
TEST(SentencePiece, TextAfterACutEncodesAsInTheWhole) {
  std::mt19937 rng(11);
  for (const char* m : {"llama_bpe", "unigram"}) {
    auto tok = make_tokenizer(golden(std::string(m) + ".model"));
    ASSERT_EQ(tok->cut_rule(), CutRule::BeforeSpace);
    int cuts = 0;
    for (int trial = 0; trial < 60; ++trial) {
      std::string text = soup(rng, 200);
      if (trial % 3 == 0) text += "\xff\xfe";  // bytes that are not UTF-8, at the end
      if (trial % 3 == 1) text.insert(text.size() / 2, 1, '\x80');
      const auto whole = tok->encode(text);
      for (size_t c = next_cut(CutRule::BeforeSpace, text, 0); c < text.size();
           c = next_cut(CutRule::BeforeSpace, text, c + 1), ++cuts) {
        auto a = tok->encode(std::string_view(text).substr(0, c));
        auto b = tok->encode_continuation(std::string_view(text).substr(c));
        a.insert(a.end(), b.begin(), b.end());
        ASSERT_EQ(ids_line(a), ids_line(whole)) << m << ": cut at " << c << " of " << text;
      }
    }
    EXPECT_GT(cuts, 300) << m;
    // Long parts, which libsentencepiece gets in smaller parts of its own.
    const std::string text = soup(rng, 40000);
    const auto whole = tok->encode(text);
    for (size_t c = next_cut(CutRule::BeforeSpace, text, 3000); c < text.size();
         c = next_cut(CutRule::BeforeSpace, text, c + 7000)) {
      auto a = tok->encode(std::string_view(text).substr(0, c));
      auto b = tok->encode_continuation(std::string_view(text).substr(c));
      a.insert(a.end(), b.begin(), b.end());
      ASSERT_TRUE(a == whole) << m << ": cut at " << c;
    }
  }
  // The cuts: before a space that follows printable ASCII.
  EXPECT_EQ(next_cut(CutRule::BeforeSpace, "a  b", 0), 1u);
  EXPECT_EQ(next_cut(CutRule::BeforeSpace, "a  b", 2), 4u);
  EXPECT_EQ(next_cut(CutRule::BeforeSpace, "é b\n c", 0), 7u);  // none: not after é, nor after a line break
  EXPECT_EQ(last_cut(CutRule::BeforeSpace, "x y z"), 3u);
  EXPECT_EQ(last_cut(CutRule::BeforeSpace, " \t"), 0u);
}

// preprocess's workers share one tokenizer: libsentencepiece's encode must be safe to call from
// several threads at once.
TEST(SentencePiece, EncodesTheSameFromManyThreads) {
  std::mt19937 rng(13);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    std::string text = " ";  // as after a cut
    text += soup(rng, 1 + rng() % 1000);
    if (i % 7 == 0) text += '\xff';
    texts.push_back(text);
  }
  for (const char* m : {"llama_bpe", "unigram"}) {
    auto tok = make_tokenizer(golden(std::string(m) + ".model"));
    std::vector<std::vector<uint32_t>> whole, after_cut;
    for (const auto& t : texts) whole.push_back(tok->encode(t)), after_cut.push_back(tok->encode_continuation(t));
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (size_t k = 0; k < 4; ++k)
      threads.emplace_back([&, k] {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t j = (i + k * 50) % texts.size();  // the threads on different texts at first, then the same
          if (tok->encode(texts[j]) != whole[j] || tok->encode_continuation(texts[j]) != after_cut[j]) ++bad;
        }
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(bad, 0) << m;
  }
}

TEST(SentencePiece, TokenTextKeepsTheSpaceOfItsPiece) {
  auto tok = make_tokenizer(golden("llama_bpe.model"));
  const auto ids = tok->encode("Hello world");  // ▁H ell o ▁world
  ASSERT_EQ(ids, (std::vector<uint32_t>{330, 430, 944, 843}));
  std::string streamed;
  for (uint32_t id : ids) streamed += tok->token_text(id);
  EXPECT_EQ(streamed, " Hello world");  // the dummy prefix is a space here
  EXPECT_EQ(tok->decode(ids), "Hello world");
  EXPECT_EQ(tok->token_text(tok->eos_id()), "");
  EXPECT_EQ(tok->token_text(1), "");         // <s>
  EXPECT_EQ(tok->token_text(3 + 'A'), "A");  // <0x41>
  EXPECT_EQ(tok->token_text(3 + 0xff), "\xff");
  EXPECT_EQ(tok->token_text(0), " \xe2\x81\x87 ");  // <unk> shows as " ⁇ ", as SentencePiece decodes it
  EXPECT_NE(error_of([&] { tok->token_text(1000); }).find("token id 1000 at position 0 is not in the vocabulary (expected 0..999)"),
            std::string::npos);
}

TEST(SentencePiece, DecodeRejectsIdsOutsideTheVocabulary) {
  const std::string path = golden("llama_bpe.model");
  auto tok = make_tokenizer(path);
  EXPECT_EQ(error_of([&] { tok->decode({5, 1000}); }),
            path + ": token id 1000 at position 1 is not in the vocabulary (expected 0..999)");
}

TEST(SentencePiece, MalformedFilesAreClearErrors) {
  TempDir t;
  const std::string good = read_file(golden("llama_bpe.model"));
  write_file(t / "text.model", "this is not a model\n");
  write_file(t / "empty.model", "");
  write_file(t / "cut.model", good.substr(0, good.size() / 3));
  write_file(t / "tokenizer.model", "{\"model\": {\"type\": \"BPE\"}}");
  const std::string expected = "; expected a SentencePiece .model protobuf as spm_train writes it)";
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "text.model"); }),
            t / "text.model" + ": not a SentencePiece model (the file does not parse as a protobuf" + expected);
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "tokenizer.model"); }),
            t / "tokenizer.model" + ": not a SentencePiece model (the file does not parse as a protobuf" + expected);
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "empty.model"); }),
            t / "empty.model" + ": not a SentencePiece model (unk is not defined" + expected);
  std::string msg = error_of([&] { make_tokenizer(t / "cut.model"); });
  EXPECT_EQ(msg.rfind(t / "cut.model: not a SentencePiece model (", 0), 0u) << msg;
  EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  // libsentencepiece's trie builder ends the process on these (found by tests/fuzz/fuzz_sentencepiece):
  // ModelProto{pieces: [{piece: ""}]} and ModelProto{pieces: [{piece: "a"}, {piece: "a"}]}.
  write_file(t / "empty-piece.model", std::string("\x0a\x02\x0a\x00", 4));
  write_file(t / "twice.model", std::string("\x0a\x03\x0a\x01" "a" "\x0a\x03\x0a\x01" "a", 10));
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "empty-piece.model"); }),
            t / "empty-piece.model" + ": piece 0 is empty (expected a SentencePiece model as spm_train writes it)");
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "twice.model"); }),
            t / "twice.model" + ": piece 'a' appears twice (expected every piece once)");
  EXPECT_EQ(error_of([&] { make_tokenizer(t / "none.model"); }),
            t / "none.model" + ": cannot read tokenizer file (expected a SentencePiece .model)");
}

std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = read_file(e.path().string());
  return files;
}

std::vector<uint32_t> stream_of(const std::string& dir) {
  std::vector<uint32_t> ids;
  for (const char* split : {"train", "val"}) {
    TokenDataset d = TokenDataset::open(dir, split);
    std::vector<int32_t> part(size_t(d.num_tokens()));
    if (!part.empty()) d.read(0, d.num_tokens(), part.data());
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

// A 1.1 MB document is tokenised in 1 MiB pieces cut before a space; the stream equals encoding
// each whole document, for any --workers and after stops at every checkpoint.
TEST(SentencePiece, PreprocessLongDocumentsInPieces) {
  TempDir t;
  std::mt19937 rng(5);
  std::string big = soup(rng, 1100000);
  size_t at = big.size() / 3;
  while ((static_cast<unsigned char>(big[at]) & 0xC0) == 0x80) --at;  // between characters
  big.insert(at, "\xff\xfe");  // kept as byte pieces
  const std::string small = "A short one.\n";
  write_file(t / "in/a.txt", big);
  write_file(t / "in/b.txt", small);
  const std::string model = golden("llama_bpe.model");
  auto tok = make_tokenizer(model);

  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / "w1";
  o.tokenizer = model;
  o.val_fraction = 0.1;
  o.shard_tokens = 400000;
  o.workers = 1;
  o.progress_seconds = 0;
  auto summary = preprocess(o);
  EXPECT_EQ(summary["documents"], 2);
  EXPECT_EQ(summary["invalid_utf8_bytes"], 2);
  std::vector<uint32_t> want = tok->encode(big);
  want.push_back(tok->eos_id());
  for (uint32_t id : tok->encode(small)) want.push_back(id);
  want.push_back(tok->eos_id());
  const auto got = stream_of(t / "w1");
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
  const size_t big_tokens = tok->encode(big).size();
  EXPECT_EQ(tok->decode(std::vector<uint32_t>(got.begin(), got.begin() + ptrdiff_t(big_tokens))), big);

  auto m = nlohmann::json::parse(read_file(t / "w1/train/manifest.json"));
  EXPECT_EQ(m["tokenizer"], model);
  EXPECT_EQ(m["tokenizer_hash"], sha256_hex(read_file(model)));
  EXPECT_EQ(m["vocab_size"], 1000);
  EXPECT_EQ(m["eos_id"], 2);

  o.workers = 2;
  o.output = t / "w2";
  preprocess(o);
  EXPECT_EQ(tree(t / "w1"), tree(t / "w2"));

  o.output = t / "resumed";
  o.crash_after_checkpoints = 1;
  int stops = 0;
  for (;; ++stops) {
    try {
      preprocess(o);
      break;
    } catch (const Error&) {
      ASSERT_LT(stops, 100);
    }
  }
  EXPECT_GE(stops, 3);
  EXPECT_EQ(tree(t / "w1"), tree(t / "resumed"));
}

}  // namespace
}  // namespace moe
