// Pre-tokenization for byte-level BPE: cuts text into the pieces that merges never cross. It
// splits exactly as the GPT-2 and Llama-3 regexes do (below) on valid UTF-8, but is written by
// hand over bytes, so any input works: a byte that is not part of a valid UTF-8 character counts
// as one character of the "other" class (neither letter, number nor whitespace).
//
//   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// \p{L} is general category L*, \p{N} is N*, \s is the Unicode White_Space property.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

enum class SplitPattern { Gpt2, Llama3 };

// The regex strings above, as Hugging Face tokenizer.json files spell them (Split pre-tokenizer).
extern const char* const kGpt2Regex;
extern const char* const kLlama3Regex;

struct PreTokenizer {
  SplitPattern pattern = SplitPattern::Gpt2;
  // Hugging Face's Digits(individual_digits: true) before the pattern (SmolLM): every \p{N}
  // character is a piece of its own, and the pattern splits the text between them.
  bool split_digits = false;
};

enum class CharClass : uint8_t { Other = 0, Letter = 1, Number = 2, Space = 3 };

// Class of a non-ASCII code point (table in unicode_class.cpp).
CharClass unicode_class(uint32_t cp);

// End (exclusive) of the pattern's piece that starts at `pos` < text.size().
size_t piece_end(std::string_view text, size_t pos, SplitPattern pattern);

// Calls f(piece) for each piece of `text`, in order; the pieces concatenate to `text`.
template <class F>
void for_each_piece(std::string_view text, const PreTokenizer& pre, F&& f);

// The first position p >= from where cutting `text` in two splits it into exactly the pieces of the
// whole (for both patterns, with or without split_digits): before a '\n' that follows a letter or
// number ("x|\n"), before a ' ' between a non-space character and a letter ("x| word"), or before a
// letter after a '\n' that follows a non-space character ("。\n|x"). text.size() when there is none.
// Lets long texts be pre-tokenized in parallel chunks.
size_t safe_cut(std::string_view text, size_t from);
// The last such position in text, or 0 when there is none.
size_t last_safe_cut(std::string_view text);

// ---- implementation details of for_each_piece ----
namespace detail {
// Length in bytes (1..4) and class of the character at text[pos]; 1 and Other for a byte that does
// not start a valid UTF-8 character.
struct CharInfo {
  CharClass cls;
  uint8_t len;
};
CharInfo char_at(std::string_view text, size_t pos);
}  // namespace detail

template <class F>
void for_each_piece(std::string_view text, const PreTokenizer& pre, F&& f) {
  auto split = [&](std::string_view t) {
    for (size_t pos = 0; pos < t.size();) {
      size_t end = piece_end(t, pos, pre.pattern);
      f(t.substr(pos, end - pos));
      pos = end;
    }
  };
  if (!pre.split_digits) return split(text);
  size_t start = 0;  // of the current run without numbers
  for (size_t pos = 0; pos < text.size();) {
    detail::CharInfo c = detail::char_at(text, pos);
    if (c.cls == CharClass::Number) {
      split(text.substr(start, pos - start));
      f(text.substr(pos, c.len));
      start = pos + c.len;
    }
    pos += c.len;
  }
  split(text.substr(start));
}

}  // namespace moe
