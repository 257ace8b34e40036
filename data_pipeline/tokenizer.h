// Tokenizers turn text into token ids and back: the byte tokenizer, byte-level BPE from a Hugging
// Face tokenizer.json (data_pipeline/bpe.h) and SentencePiece .model files
// (data_pipeline/sentencepiece.h), behind one interface.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

// Where a long text may be cut so that its parts, the first encoded with Tokenizer::encode and each
// later one with Tokenizer::encode_continuation, give exactly the ids of the whole text. Lets
// preprocess tokenise a long document in pieces (bounded memory, parallel).
enum class CutRule : uint8_t {
  Anywhere,     // at any UTF-8 character boundary (the byte tokenizer)
  PreTokens,    // where both BPE pre-tokenizer patterns split whatever the context (safe_cut, pretokenize.h)
  BeforeSpace,  // before a ' ' that follows a printable ASCII character (SentencePiece, see sentencepiece.h)
  Nowhere,      // no place is known to be safe
};

// The first cut at or after `from` allowed by `rule` (text.size() when there is none).
size_t next_cut(CutRule rule, std::string_view text, size_t from);
// The last cut in `text` allowed by `rule` (0 when there is none).
size_t last_cut(CutRule rule, std::string_view text);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<uint32_t> encode(std::string_view text) const = 0;
  // The ids of `text` when it continues a text cut where cut_rule() allows. Only SentencePiece
  // differs from encode (no dummy "▁" prefix, no stripping of leading spaces).
  virtual std::vector<uint32_t> encode_continuation(std::string_view text) const { return encode(text); }
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  // The bytes token `id` stands for inside a text: decode({id}), except that a SentencePiece
  // piece keeps the space of its leading "▁" (which decode drops at the start of a text). For
  // streaming generated tokens and counting bytes per token.
  virtual std::string token_text(uint32_t id) const { return decode({id}); }
  virtual int64_t vocab_size() const = 0;
  virtual uint32_t eos_id() const = 0;
  // "byte", or the tokenizer file's path; recorded in the shard manifest.
  virtual std::string name() const = 0;
  // Stable fingerprint (hex sha256 of the definition) recorded in the manifest, so training and
  // generation can refuse data made with a different tokenizer.
  virtual std::string hash() const = 0;
  virtual CutRule cut_rule() const = 0;
};

// "byte": ids 0..255 are the raw bytes; vocab 256. Byte 0 (NUL never occurs in text) doubles as
// the end-of-document separator. "<path>.json": byte-level BPE (GPT-2 / Llama-3 style), EOS the
// first of <|endoftext|>, <|end_of_text|>, </s>. "<path>.model": SentencePiece (Llama-2 /
// Mistral style), EOS the model's eos_id. Throws moe::Error for an unknown spec or an unreadable,
// malformed or unsupported file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

}  // namespace moe
