// Byte-level BPE (GPT-2 / Llama-3 / SmolLM style) read from Hugging Face `tokenizer.json` files:
// the text is pre-tokenized (pretokenize.h), each piece starts as its bytes and merges are applied
// lowest rank first. Tokens are byte strings, so decode(encode(x)) == x for any bytes x.
//
// Differences from Hugging Face `tokenizers` (docs/formats.md, "Tokenizers"): added tokens are not
// matched in the text (a literal "<|endoftext|>" is encoded as ordinary text, so a document can
// never contain the end-of-document id), and post-processors (BOS templates) are not applied.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "data_pipeline/tokenizer.h"

namespace moe {

// GPT-2's bytes_to_unicode: bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF stand for themselves, the
// other 68 bytes for U+0100.. in byte order. Returns the UTF-8 of the mapped characters.
std::string bytes_to_unicode(std::string_view bytes);
// The inverse; false when `s` is not valid UTF-8 or holds a character outside the map.
bool unicode_to_bytes(std::string_view s, std::string& bytes);

// The end-of-document token: the first of these that the file defines.
inline constexpr const char* kEosCandidates[] = {"<|endoftext|>", "<|end_of_text|>", "</s>"};

// Loads a byte-level BPE tokenizer.json. name() is `path`, hash() the sha256 of the file's bytes.
// Throws moe::Error naming the file for anything malformed or of another kind (WordPiece,
// Unigram, a normalizer, a pre-tokenizer other than the patterns of pretokenize.h, ...).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path);
// The same from the JSON text; `name` is used in errors and as name().
std::unique_ptr<Tokenizer> parse_bpe_tokenizer(std::string_view json_text, const std::string& name,
                                               const std::string& hash);

}  // namespace moe
