#include "data_pipeline/pretokenize.h"

namespace moe {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace detail {
namespace {

constexpr CharClass ascii_class(unsigned char b) {
  if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return CharClass::Letter;
  if (b >= '0' && b <= '9') return CharClass::Number;
  if (b == ' ' || (b >= '\t' && b <= '\r')) return CharClass::Space;
  return CharClass::Other;
}

struct AsciiTable {
  CharClass cls[128];
  constexpr AsciiTable() : cls() {
    for (int b = 0; b < 128; ++b) cls[b] = ascii_class(static_cast<unsigned char>(b));
  }
};
constexpr AsciiTable kAscii;

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

}  // namespace

CharInfo char_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {kAscii.cls[b0], 1};
  const size_t left = s.size() - i;
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  // Well-formed sequences per Unicode table 3-7: no overlong forms, surrogates or code points
  // above U+10FFFF.
  if (b0 >= 0xC2 && b0 <= 0xDF && left >= 2 && is_cont(b(1)))
    return {unicode_class(uint32_t(b0 & 0x1F) << 6 | (b(1) & 0x3F)), 2};
  if (b0 >= 0xE0 && b0 <= 0xEF && left >= 3 && is_cont(b(1)) && is_cont(b(2))) {
    uint32_t cp = uint32_t(b0 & 0x0F) << 12 | uint32_t(b(1) & 0x3F) << 6 | (b(2) & 0x3F);
    if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) return {unicode_class(cp), 3};
  }
  if (b0 >= 0xF0 && b0 <= 0xF4 && left >= 4 && is_cont(b(1)) && is_cont(b(2)) && is_cont(b(3))) {
    uint32_t cp = uint32_t(b0 & 0x07) << 18 | uint32_t(b(1) & 0x3F) << 12 | uint32_t(b(2) & 0x3F) << 6 | (b(3) & 0x3F);
    if (cp >= 0x10000 && cp <= 0x10FFFF) return {unicode_class(cp), 4};
  }
  return {CharClass::Other, 1};
}

}  // namespace detail

namespace {

using detail::char_at;

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

// Length of the contraction ('s 't 're 've 'm 'll 'd) at text[pos] == '\'', or 0.
size_t contraction(std::string_view t, size_t pos, bool any_case) {
  auto at = [&](size_t k) { return pos + k < t.size() ? (any_case ? lower(t[pos + k]) : t[pos + k]) : '\0'; };
  char c1 = at(1), c2 = at(2);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// End of the run of characters of class `cls` starting at pos, at most `max_chars` of them.
size_t run_end(std::string_view t, size_t pos, CharClass cls, size_t max_chars = SIZE_MAX) {
  for (size_t n = 0; pos < t.size() && n < max_chars; ++n) {
    detail::CharInfo c = char_at(t, pos);
    if (c.cls != cls) break;
    pos += c.len;
  }
  return pos;
}

// \s+(?!\S)|\s+ at a whitespace character: the run, less its last character when a non-space
// follows and the run has more than one character (that character then starts the next piece).
size_t whitespace_end(std::string_view t, size_t pos) {
  size_t last = pos, end = pos;
  while (end < t.size()) {
    detail::CharInfo c = char_at(t, end);
    if (c.cls != CharClass::Space) break;
    last = end;
    end += c.len;
  }
  return end < t.size() && last > pos ? last : end;
}

size_t gpt2_end(std::string_view t, size_t pos) {
  if (t[pos] == '\'') {
    if (size_t n = contraction(t, pos, false)) return pos + n;
  }
  detail::CharInfo c = char_at(t, pos);
  size_t start = pos;  // ` ?X+`: an optional space, then a run of letters, numbers or others
  if (t[pos] == ' ' && pos + 1 < t.size()) {
    detail::CharInfo next = char_at(t, pos + 1);
    if (next.cls != CharClass::Space) c = next, start = pos + 1;
  }
  if (c.cls != CharClass::Space) return run_end(t, start, c.cls);
  return whitespace_end(t, pos);
}

size_t llama3_end(std::string_view t, size_t pos) {
  if (t[pos] == '\'') {
    if (size_t n = contraction(t, pos, true)) return pos + n;
  }
  detail::CharInfo c = char_at(t, pos);
  auto is_newline = [&](size_t i) { return t[i] == '\r' || t[i] == '\n'; };
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c.cls == CharClass::Letter) return run_end(t, pos, CharClass::Letter);
  if (c.cls != CharClass::Number && !is_newline(pos) && pos + c.len < t.size() &&
      char_at(t, pos + c.len).cls == CharClass::Letter)
    return run_end(t, pos + c.len, CharClass::Letter);
  // \p{N}{1,3}
  if (c.cls == CharClass::Number) return run_end(t, pos, CharClass::Number, 3);
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t start = t[pos] == ' ' && pos + 1 < t.size() && char_at(t, pos + 1).cls == CharClass::Other ? pos + 1 : pos;
  if (char_at(t, start).cls == CharClass::Other) {
    size_t end = run_end(t, start, CharClass::Other);
    while (end < t.size() && is_newline(end)) ++end;
    return end;
  }
  // \s*[\r\n]+: the whitespace run up to and including its last newline, if it has one.
  size_t end = pos, after_newline = 0;
  while (end < t.size()) {
    detail::CharInfo w = char_at(t, end);
    if (w.cls != CharClass::Space) break;
    if (is_newline(end)) after_newline = end + 1;
    end += w.len;
  }
  if (after_newline) return after_newline;
  return whitespace_end(t, pos);
}

}  // namespace

size_t piece_end(std::string_view text, size_t pos, SplitPattern pattern) {
  return pattern == SplitPattern::Gpt2 ? gpt2_end(text, pos) : llama3_end(text, pos);
}

namespace {
// Class of the character that ends right before p (p >= 1), as the pre-tokenizer scanning from
// the left sees it: a valid UTF-8 character's lead byte is never part of an earlier character, so
// looking back from p suffices.
CharClass class_before(std::string_view t, size_t p) {
  size_t s = p - 1;
  if (static_cast<unsigned char>(t[s]) < 0x80) return detail::kAscii.cls[static_cast<unsigned char>(t[s])];
  for (int k = 0; k < 3 && s > 0 && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80; ++k) --s;
  detail::CharInfo c = detail::char_at(t, s);
  return s + c.len == p ? c.cls : CharClass::Other;
}

// Both patterns end a piece at such a p and start the next one there, whatever comes before or
// after (no piece holds a space inside except at its start, and none takes a letter after a
// newline):
//  - '\n' after a letter or number: letter and number pieces never take a newline (Llama-3's
//    punctuation pieces do, hence not after punctuation);
//  - ' ' after a non-space character and before a letter: " word" is one piece either way
//    ( ?\p{L}+, Llama-3's [^\r\n\p{L}\p{N}]?\p{L}+);
//  - a letter after a '\n' that follows a non-space character: the newline is a piece of its own
//    (or ends a punctuation piece) either way; after more whitespace GPT-2's \s+(?!\S) would
//    split the run differently at the end of the text.
bool is_safe_cut(std::string_view text, size_t p) {
  if (p == 0 || p >= text.size()) return false;
  if (text[p] == '\n') {
    CharClass c = class_before(text, p);
    return c == CharClass::Letter || c == CharClass::Number;
  }
  if (text[p] == ' ')
    return p + 1 < text.size() && class_before(text, p) != CharClass::Space &&
           detail::char_at(text, p + 1).cls == CharClass::Letter;
  return text[p - 1] == '\n' && p >= 2 && class_before(text, p - 1) != CharClass::Space &&
         detail::char_at(text, p).cls == CharClass::Letter;
}
}  // namespace

size_t safe_cut(std::string_view text, size_t from) {
  for (size_t p = from; p < text.size(); ++p)
    if (is_safe_cut(text, p)) return p;
  return text.size();
}

size_t last_safe_cut(std::string_view text) {
  for (size_t p = text.size(); p-- > 1;)
    if (is_safe_cut(text, p)) return p;
  return 0;
}

}  // namespace moe
