// Tokenizers turn text into token ids and back: the byte tokenizer and byte-level BPE from a
// Hugging Face tokenizer.json (data_pipeline/bpe.h), behind one interface. SentencePiece .model
// files are not supported yet.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<uint32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual uint32_t eos_id() const = 0;
  // "byte", or the tokenizer file's path; recorded in the shard manifest.
  virtual std::string name() const = 0;
  // Stable fingerprint (hex sha256 of the definition) recorded in the manifest, so training and
  // generation can refuse data made with a different tokenizer.
  virtual std::string hash() const = 0;
  // True when encode(a + b) == encode(a) + encode(b) for every split of the text: preprocess may
  // then tokenise a long document in pieces (bounded memory, parallel).
  virtual bool encodes_piecewise() const { return false; }
};

// "byte": ids 0..255 are the raw bytes; vocab 256. Byte 0 (NUL never occurs in text) doubles as
// the end-of-document separator. "<path>.json": byte-level BPE (GPT-2 / Llama-3 style), EOS the
// first of <|endoftext|>, <|end_of_text|>, </s>. Throws moe::Error for an unknown spec or an
// unreadable, malformed or unsupported file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

}  // namespace moe
