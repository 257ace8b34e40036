#include "data_pipeline/tokenizer.h"

#include "data_pipeline/bpe.h"
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
  bool encodes_piecewise() const override { return true; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.ends_with(".json")) return load_bpe_tokenizer(spec);
  if (spec.ends_with(".model"))
    throw error(spec, ": SentencePiece .model files are not supported yet (expected byte or a byte-level BPE tokenizer.json)");
  throw error("tokenizer '", spec, "': unknown kind (expected byte, a tokenizer.json file, or a SentencePiece .model)");
}

}  // namespace moe
