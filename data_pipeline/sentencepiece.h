// SentencePiece `.model` files (Llama-2, Mistral, T5 style), encoded and decoded by
// libsentencepiece, so on valid UTF-8 the ids are exactly spm_encode's and decoding is
// spm_decode's. Two additions (docs/formats.md, "Tokenizers"):
//  - Bytes that are not UTF-8, which SentencePiece turns into U+FFFD, are kept: with a byte-fallback
//    model (all 256 <0xNN> pieces, as Llama-2 and Mistral have) they become their byte pieces, and
//    decode gives them back, so decode(encode(x)) == x for any bytes when the model's normalizer
//    is the identity and keeps whitespace (Llama-2 / Mistral). Other models are as lossy as
//    SentencePiece itself is (normalisation, whitespace, unknown characters).
//  - encode_continuation() encodes the text after a cut (CutRule::BeforeSpace): no dummy "▁" prefix,
//    leading spaces kept, so a long document encoded in parts gives the ids of the whole. A model
//    with a piece that holds "▁" after another character (whitespace as a suffix, or words not
//    split at whitespace) has no safe cut (CutRule::Nowhere).
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "data_pipeline/tokenizer.h"

namespace moe {

// Loads a SentencePiece model. name() is `path`, hash() the sha256 of the file's bytes. EOS is the
// model's eos_id (</s>), else the first of the pieces in kEosCandidates (bpe.h). Throws moe::Error
// naming the file when it cannot be read, is not a SentencePiece model protobuf, or has no EOS.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
// The same from the file's bytes; `name` is used in errors and as name().
std::unique_ptr<Tokenizer> parse_sentencepiece_tokenizer(std::string_view model, const std::string& name);

}  // namespace moe
