#include "data_pipeline/tokenizer.h"

#include <algorithm>

#include "data_pipeline/bpe.h"
#include "data_pipeline/pretokenize.h"
#include "data_pipeline/sentencepiece.h"
#include "framework/error.h"
#include "framework/sha256.h"

namespace moe {
namespace {

// Ids 0..255 are the bytes themselves. Id 0 (NUL) is also the end-of-document separator: text
// never contains it, and preprocess rejects a document that does.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<uint32_t> encode(std::string_view text) const override {
    std::vector<uint32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string text(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] > 255) throw error("byte tokenizer: token id ", ids[i], " at position ", i, " is not a byte (expected 0..255)");
      text[i] = static_cast<char>(ids[i]);
    }
    return text;
  }
  int64_t vocab_size() const override { return 256; }
  uint32_t eos_id() const override { return 0; }
  std::string name() const override { return "byte"; }
  std::string hash() const override { return sha256_hex("moe-byte-tokenizer-v1"); }
  CutRule cut_rule() const override { return CutRule::Anywhere; }
};

// Printable ASCII (not a space): a SentencePiece piece never ends in one and goes on with "▁"
// (sentencepiece.cpp checks the vocabulary), and no normalizer joins one with a following space.
bool is_space_cut(std::string_view t, size_t p) {
  return p > 0 && p < t.size() && t[p] == ' ' && t[p - 1] > ' ' && t[p - 1] < 0x7F;
}

bool is_char_start(std::string_view t, size_t p) { return (static_cast<unsigned char>(t[p]) & 0xC0) != 0x80; }

}  // namespace

size_t next_cut(CutRule rule, std::string_view text, size_t from) {
  switch (rule) {
    case CutRule::Anywhere:
      for (size_t p = std::max<size_t>(from, 1); p < text.size(); ++p)
        if (is_char_start(text, p)) return p;
      return text.size();
    case CutRule::PreTokens:
      return safe_cut(text, from);
    case CutRule::BeforeSpace:
      for (size_t p = from; p < text.size(); ++p)
        if (is_space_cut(text, p)) return p;
      return text.size();
    case CutRule::Nowhere:
      break;
  }
  return text.size();
}

size_t last_cut(CutRule rule, std::string_view text) {
  switch (rule) {
    case CutRule::Anywhere:
      for (size_t p = text.size(); p-- > 1;)
        if (is_char_start(text, p)) return p;
      return 0;
    case CutRule::PreTokens:
      return last_safe_cut(text);
    case CutRule::BeforeSpace:
      for (size_t p = text.size(); p-- > 1;)
        if (is_space_cut(text, p)) return p;
      return 0;
    case CutRule::Nowhere:
      break;
  }
  return 0;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.ends_with(".json")) return load_bpe_tokenizer(spec);
  if (spec.ends_with(".model")) return load_sentencepiece_tokenizer(spec);
  throw error("tokenizer '", spec, "': unknown kind (expected byte, a tokenizer.json file, or a SentencePiece .model)");
}

}  // namespace moe
