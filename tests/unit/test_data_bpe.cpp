// Byte-level BPE: pre-tokenizer splits, training on a hand-checkable corpus, encoding with a
// hand-written tokenizer.json, round trips on arbitrary bytes, determinism, and malformed files.
// (Equality with Hugging Face `tokenizers` was checked outside the suite, which has no access to
// it: same ids on GPT-2's vocabulary and on our trained files for all three pre-tokenizers.)
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "data_pipeline/bpe.h"
#include "data_pipeline/bpe_train.h"
#include "data_pipeline/pretokenize.h"
#include "data_pipeline/tokenizer.h"
#include "framework/sha256.h"
#include "framework/threads.h"
#include "test_data_util.h"

namespace moe {
namespace {

std::vector<std::string> pieces(std::string_view text, PreTokenizer pre) {
  std::vector<std::string> out;
  for_each_piece(text, pre, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

using Strings = std::vector<std::string>;
const PreTokenizer kGpt2{SplitPattern::Gpt2, false};
const PreTokenizer kLlama3{SplitPattern::Llama3, false};
const PreTokenizer kDigits{SplitPattern::Gpt2, true};

TEST(PreTokenizer, Gpt2Pattern) {
  EXPECT_EQ(pieces("Hello world's  123 !!\n\n  x", kGpt2),
            (Strings{"Hello", " world", "'s", " ", " 123", " !!", "\n\n ", " x"}));
  EXPECT_EQ(pieces("don't I'M", kGpt2), (Strings{"don", "'t", " I", "'", "M"}));  // case-sensitive
  EXPECT_EQ(pieces("x  ", kGpt2), (Strings{"x", "  "}));                         // trailing run stays whole
  EXPECT_EQ(pieces("naïve 東京 ½", kGpt2), (Strings{"naïve", " 東京", " ½"}));     // \p{L}, \p{N} beyond ASCII
  EXPECT_EQ(pieces("a\u3000\u3000b", kGpt2), (Strings{"a", "\u3000", "\u3000", "b"}));
}

TEST(PreTokenizer, Llama3Pattern) {
  EXPECT_EQ(pieces("I'M 123456 ..\n\n x", kLlama3), (Strings{"I", "'M", " ", "123", "456", " ..\n\n", " x"}));
  EXPECT_EQ(pieces("a \n\n b\tc", kLlama3), (Strings{"a", " \n\n", " b", "\tc"}));
}

TEST(PreTokenizer, DigitsAlone) {
  EXPECT_EQ(pieces("ab 2024x", kDigits), (Strings{"ab", " ", "2", "0", "2", "4", "x"}));
}

TEST(PreTokenizer, InvalidUtf8IsOtherCharacters) {
  // 0xFF, a lone continuation byte, a truncated 3-byte sequence and a surrogate are each "other".
  std::string text = "ab\xFF\x80 c\xE6\x9D"
                     "d\xED\xA0\x80";
  EXPECT_EQ(pieces(text, kGpt2), (Strings{"ab", "\xFF\x80", " c", "\xE6\x9D", "d", "\xED\xA0\x80"}));
}

std::string random_bytes(std::mt19937& rng, size_t n) {
  // Mostly text-like, with raw bytes mixed in so that invalid UTF-8 is common.
  static const std::string alphabet[] = {"a", "b", "Z", " ", " ", "\n", "\t", "'s", "7", ".", "é", "中", "\u3000", "😀"};
  std::string s;
  while (s.size() < n) {
    if (rng() % 5 == 0)
      s += char(rng() % 256);
    else
      s += alphabet[rng() % std::size(alphabet)];
  }
  return s;
}

TEST(PreTokenizer, PiecesCoverTextAndSafeCutsChangeNothing) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text = random_bytes(rng, 1 + rng() % 200);
    for (PreTokenizer pre : {kGpt2, kLlama3, kDigits}) {
      Strings whole = pieces(text, pre);
      std::string joined;
      for (const auto& p : whole) {
        EXPECT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, text);
      for (size_t cut = safe_cut(text, 0); cut < text.size(); cut = safe_cut(text, cut + 1)) {
        Strings split = pieces(std::string_view(text).substr(0, cut), pre);
        for (auto& p : pieces(std::string_view(text).substr(cut), pre)) split.push_back(p);
        ASSERT_EQ(split, whole) << "cut at " << cut;
      }
    }
  }
}

// ---- training ----

Strings merge_strings(const BpeVocab& v) {
  Strings out;
  for (auto [a, b] : v.merges) out.push_back(v.tokens[a] + " " + v.tokens[b]);
  return out;
}

TEST(BpeTrain, HandCheckedMerges) {
  // One piece, pairs aa:4 ab:2 (rest 1). After "a a": (aa,a):2 and (a,b):2 tie; "a" < "aa" picks
  // "a b". Then (aa,ab):2. Then all pairs count 1 and the smallest left bytes win: "a c".
  PieceCounts counts;
  count_pieces({"aaabdaaabac"}, kGpt2, counts);
  ASSERT_EQ(counts.size(), 1u);
  BpeVocab v = learn_bpe(counts, 1 + 256 + 4, {"<|endoftext|>"});
  EXPECT_EQ(merge_strings(v), (Strings{"a a", "a b", "aa ab", "a c"}));
  ASSERT_EQ(v.tokens.size(), 261u);
  EXPECT_EQ(v.tokens[0], "<|endoftext|>");
  EXPECT_EQ(v.tokens[1 + 'a'], "a");
  EXPECT_EQ(v.tokens[257], "aa");
  EXPECT_EQ(v.tokens[259], "aaab");
}

TEST(BpeTrain, CountsWeightPairs) {
  PieceCounts counts;
  count_pieces({"hello world hello", " hello"}, kGpt2, counts);
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.at("hello"), 1);
  EXPECT_EQ(counts.at(" hello"), 2);
  EXPECT_EQ(counts.at(" world"), 1);
  // "xy" occurs 3 times, "yz" 5 times: (y, z) merges first.
  PieceCounts toy{{"xy", 3}, {"yz", 5}};
  BpeVocab v = learn_bpe(toy, 1000, {"<|endoftext|>"});
  EXPECT_EQ(merge_strings(v), (Strings{"y z", "x y"}));  // then no pairs are left
  EXPECT_EQ(v.tokens.size(), 259u);
}

TEST(BpeTrain, RejectsBadSizesAndSpecials) {
  PieceCounts counts{{"ab", 1}};
  EXPECT_NE(test::error_of([&] { learn_bpe(counts, 256, {"<|endoftext|>"}); }).find("--vocab-size 256: too small"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { learn_bpe(counts, 300, {"<|x|>", "<|x|>"}); }).find("given twice"), std::string::npos);
  EXPECT_NE(test::error_of([&] { learn_bpe(counts, 300, {"a"}); }).find("too short"), std::string::npos);
}

std::string corpus_slice(size_t bytes) {
  std::string text = test::read_file(std::string(std::getenv("MOE_SOURCE_DIR")) + "/data/tinyshakespeare.txt");
  EXPECT_GT(text.size(), bytes);
  return text.substr(0, bytes);
}

std::string train_json(const std::string& text, int64_t vocab, PreTokenizer pre) {
  PieceCounts counts;
  count_pieces({text}, pre, counts);
  return tokenizer_json(learn_bpe(counts, vocab, {"<|endoftext|>"}), pre).dump(2);
}

TEST(BpeTrain, DeterministicForAnyThreadCount) {
  std::string text = corpus_slice(60000);
  set_num_threads(1);
  std::string one = train_json(text, 600, kGpt2);
  set_num_threads(2);
  std::string two = train_json(text, 600, kGpt2);
  EXPECT_EQ(one, two);
  EXPECT_EQ(train_json(text, 600, kGpt2), one);
  set_num_threads(0);
}

TEST(BpeTrain, TrainedFileRoundTripsAnyBytes) {
  std::string text = corpus_slice(60000);
  test::TempDir dir;
  std::mt19937 rng(11);
  for (PreTokenizer pre : {kGpt2, kLlama3, kDigits}) {
    std::string path = dir / "tok.json";
    test::write_file(path, train_json(text, 800, pre));
    auto tok = make_tokenizer(path);
    EXPECT_EQ(tok->vocab_size(), 800);
    EXPECT_EQ(tok->eos_id(), 0u);
    EXPECT_EQ(tok->name(), path);
    EXPECT_EQ(tok->hash(), sha256_file(path));
    auto ids = tok->encode(text);
    EXPECT_LT(ids.size(), text.size() / 2);  // it compresses the text it was trained on
    EXPECT_EQ(tok->decode(ids), text);
    for (int trial = 0; trial < 100; ++trial) {
      std::string x = random_bytes(rng, rng() % 300);
      ASSERT_EQ(tok->decode(tok->encode(x)), x);
    }
    std::string all;
    for (int b = 0; b < 256; ++b) all += char(b);
    EXPECT_EQ(tok->decode(tok->encode(all)), all);
  }
}

// ---- a hand-written tokenizer.json ----

// The 256 byte tokens as ids 0..255 (the part nobody writes by hand), then `extra` vocabulary
// entries, the merges, and <|endoftext|> as id 256.
std::string tiny_json(const std::string& extra_vocab, const std::string& merges,
                      const std::string& pre = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})",
                      const std::string& model_type = "BPE") {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string key = bytes_to_unicode(std::string(1, char(b)));
    if (key == "\"" || key == "\\") key = "\\" + key;
    vocab += "\"" + key + "\": " + std::to_string(b) + ", ";
  }
  return R"({"added_tokens": [{"id": 256, "content": "<|endoftext|>", "special": true}],
    "normalizer": null, "pre_tokenizer": )" +
         pre + R"(, "decoder": {"type": "ByteLevel"},
    "model": {"type": ")" +
         model_type + R"(", "vocab": {)" + vocab + R"("<|endoftext|>": 256, )" + extra_vocab + R"(},
              "merges": [)" + merges +
         "]}}";
}

const std::string kTinyVocab =
    R"("he": 257, "ll": 258, "hell": 259, "hello": 260, "Ġw": 261, "or": 262, "Ġwor": 263)";
const std::string kTinyMerges = R"("h e", "l l", "he ll", ["hell", "o"], "Ġ w", "o r", "Ġw or")";

TEST(BpeEncode, HandWrittenTokenizer) {
  auto tok = parse_bpe_tokenizer(tiny_json(kTinyVocab, kTinyMerges), "tiny.json", "h");
  EXPECT_EQ(tok->vocab_size(), 264);
  EXPECT_EQ(tok->eos_id(), 256u);
  // "hello": h+e (rank 0), l+l (1), he+ll (2), hell+o (3). " world": Ġ+w (4) before o+r (5), then Ġw+or.
  EXPECT_EQ(tok->encode("hello world"), (std::vector<uint32_t>{260, 263, 'l', 'd'}));
  EXPECT_EQ(tok->encode("lll"), (std::vector<uint32_t>{258, 'l'}));  // leftmost pair first
  EXPECT_EQ(tok->encode("<|endoftext|>"), (std::vector<uint32_t>{'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>'}));
  EXPECT_EQ(tok->decode({260, 256, 263}), "hello<|endoftext|> wor");
  std::string msg = test::error_of([&] { tok->decode({260, 264}); });
  EXPECT_NE(msg.find("tiny.json: token id 264 at position 1 is not in the vocabulary"), std::string::npos) << msg;
}

TEST(BpeEncode, IgnoreMergesTakesWholeTokens) {
  // Llama-3 files set model.ignore_merges: a piece that is a vocabulary token is not merged.
  std::string json = tiny_json(kTinyVocab + R"(, "xyz": 264)", kTinyMerges);
  EXPECT_EQ(parse_bpe_tokenizer(json, "t.json", "h")->encode("xyz hello"), (std::vector<uint32_t>{'x', 'y', 'z', ' ', 260}));
  json.replace(json.find(R"("model": {)"), 10, R"("model": {"ignore_merges": true, )");
  EXPECT_EQ(parse_bpe_tokenizer(json, "t.json", "h")->encode("xyz hello"), (std::vector<uint32_t>{264, ' ', 260}));
}

// The reference: merge the lowest-ranked adjacent pair, leftmost first, on strings.
std::vector<std::string> naive_bpe(const std::string& piece, const std::map<std::pair<std::string, std::string>, int>& rank) {
  std::vector<std::string> s;
  for (char c : piece) s.emplace_back(1, c);
  for (;;) {
    int best = -1, best_rank = INT32_MAX;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = rank.find({s[i], s[i + 1]});
      if (it != rank.end() && it->second < best_rank) best = int(i), best_rank = it->second;
    }
    if (best < 0) return s;
    s[size_t(best)] += s[size_t(best) + 1];
    s.erase(s.begin() + best + 1);
  }
}

TEST(BpeEncode, ShortAndLongPiecesMatchTheReference) {
  // Pieces up to 32 bytes and longer ones take different code paths; both must equal the reference.
  auto tok = parse_bpe_tokenizer(tiny_json(kTinyVocab, kTinyMerges), "tiny.json", "h");
  std::map<std::pair<std::string, std::string>, int> rank = {
      {{"h", "e"}, 0}, {{"l", "l"}, 1}, {{"he", "ll"}, 2}, {{"hell", "o"}, 3}, {{"o", "r"}, 5}};
  std::map<std::string, uint32_t> id = {{"he", 257}, {"ll", 258}, {"hell", 259}, {"hello", 260}, {"or", 262}};
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    std::string piece;  // letters only: one piece
    size_t n = 1 + rng() % 80;
    while (piece.size() < n) piece += "helor"[rng() % 5];
    std::vector<uint32_t> expected;
    for (const auto& t : naive_bpe(piece, rank)) expected.push_back(t.size() == 1 ? uint32_t(uint8_t(t[0])) : id.at(t));
    ASSERT_EQ(tok->encode(piece), expected) << piece;
  }
}

std::string load_error(const std::string& json) {
  return test::error_of([&] { parse_bpe_tokenizer(json, "bad.json", "h"); });
}

TEST(BpeLoad, MalformedOrUnsupportedFiles) {
  EXPECT_EQ(load_error("{\n  \"model\": {\n  oops"), "bad.json:3: not valid JSON (expected a Hugging Face tokenizer.json)");
  // A number beyond double's range is nlohmann's out_of_range, not a parse_error (found by tests/fuzz).
  EXPECT_EQ(load_error("1E88888").rfind("bad.json: not valid JSON (", 0), 0u) << load_error("1E88888");
  EXPECT_EQ(load_error("[1, 2]"), "bad.json: the top level is not a JSON object (expected a Hugging Face tokenizer.json)");
  EXPECT_EQ(load_error(R"({"model": {"type": "WordPiece", "vocab": {}}})"),
            "bad.json: model.type is 'WordPiece' (expected 'BPE': only byte-level BPE tokenizer.json files are supported)");
  EXPECT_NE(load_error(R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})").find("model.type is 'Unigram'"),
            std::string::npos);
  EXPECT_NE(load_error(tiny_json(kTinyVocab, R"("h e", "he zz")")).find("model.merges[1]: \"zz\" is not in model.vocab"),
            std::string::npos);
  EXPECT_NE(load_error(tiny_json(kTinyVocab, R"("h e", "l l l")")).find("model.merges[1] is \"l l l\""), std::string::npos);
  EXPECT_NE(load_error(tiny_json(kTinyVocab, kTinyMerges, R"({"type": "Metaspace"})")).find("pre_tokenizer {\"type\":\"Metaspace\"} is not supported"),
            std::string::npos);
  EXPECT_NE(load_error(tiny_json(R"("▁the": 300)", "")).find("\"▁the\" (id 300) is not byte-level"), std::string::npos);
  EXPECT_NE(load_error(tiny_json("\"he\": \"x\"", "")).find("model.vocab[\"he\"] is \"x\" (expected a token id"), std::string::npos);
  // An id far past the token count would size the token table by it (found by tests/fuzz).
  EXPECT_NE(load_error(tiny_json("\"he\": 2000000000", "")).find("model.vocab[\"he\"] has id 2000000000 (expected ids below"),
            std::string::npos) << load_error(tiny_json("\"he\": 2000000000", ""));
  std::string no_eos = tiny_json(kTinyVocab, kTinyMerges);
  for (std::string s : {"\"<|endoftext|>\": 256, ", R"({"id": 256, "content": "<|endoftext|>", "special": true})"})
    no_eos.erase(no_eos.find(s), s.size());
  EXPECT_NE(load_error(no_eos).find("no end-of-document token"), std::string::npos);
  std::string with_normalizer = tiny_json(kTinyVocab, kTinyMerges);
  with_normalizer.replace(with_normalizer.find("\"normalizer\": null"), 18, R"("normalizer": {"type": "NFC"})");
  EXPECT_NE(load_error(with_normalizer).find("normalizer {\"type\":\"NFC\"} is not supported (expected null)"), std::string::npos);
}

TEST(MakeTokenizer, FileKinds) {
  test::TempDir dir;
  EXPECT_EQ(test::error_of([&] { make_tokenizer(dir / "missing.json"); }),
            dir / "missing.json" + ": cannot read tokenizer file (expected a tokenizer.json)");
  EXPECT_EQ(test::error_of([] { make_tokenizer("tok/spm.model"); }),
            "tok/spm.model: cannot read tokenizer file (expected a SentencePiece .model)");
  EXPECT_NE(test::error_of([] { make_tokenizer("gpt2"); }).find("unknown kind"), std::string::npos);
  test::write_file(dir / "wp.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  EXPECT_NE(test::error_of([&] { make_tokenizer(dir / "wp.json"); }).find((dir / "wp.json") + ": model.type is 'WordPiece'"),
            std::string::npos);
}

}  // namespace
}  // namespace moe
