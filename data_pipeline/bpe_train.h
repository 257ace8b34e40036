// Byte-level BPE training (`moe tokenizer train`), in two steps:
//  1. count_pieces: the frequency of every distinct pre-token (pretokenize.h) of the corpus,
//     pre-tokenizing chunks in parallel; the counts are sums, so they do not depend on threads;
//  2. learn_bpe: starting from the 256 bytes, repeatedly merge the most frequent adjacent pair of
//     tokens (ties: the pair whose (left, right) bytes sort first). Pair counts are updated only
//     in the words that contain the merged pair, and the most frequent pair comes from a heap with
//     lazily corrected counts, so no merge rescans the corpus.
// tokenizer_json writes the result as a Hugging Face tokenizer.json that load_bpe_tokenizer (and
// Hugging Face `tokenizers`) read back. Same counts and options -> byte-identical file.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_pipeline/pretokenize.h"

namespace moe {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
// Distinct pre-token bytes -> occurrences.
using PieceCounts = std::unordered_map<std::string, int64_t, StringViewHash, std::equal_to<>>;

// Adds the pieces of each text (texts are independent: no piece spans two) to `counts`.
void count_pieces(const std::vector<std::string_view>& texts, const PreTokenizer& pre, PieceCounts& counts);

struct BpeVocab {
  std::vector<std::string> tokens;  // bytes by id: the special tokens, the 256 bytes, then learned
  int64_t specials = 0;
  // In rank order; merge (a, b) makes the token tokens[a] + tokens[b]. A token reached by two
  // different merges keeps one id, so there may be more merges than learned tokens.
  std::vector<std::pair<uint32_t, uint32_t>> merges;
};

// Learns merges until the vocabulary (special tokens and bytes included) has `vocab_size` tokens
// or no pair is left. Throws moe::Error for a vocab_size below specials + 256 or bad specials.
BpeVocab learn_bpe(const PieceCounts& counts, int64_t vocab_size, const std::vector<std::string>& special_tokens);

// The Hugging Face tokenizer.json: model BPE with vocab and merges ("a b" strings), the special
// tokens as added tokens, `pre` as its pre_tokenizer, ByteLevel decoder.
nlohmann::ordered_json tokenizer_json(const BpeVocab& vocab, const PreTokenizer& pre);

}  // namespace moe
