// One .jsonl line -> the text of one field, without building a JSON tree: preprocess reads
// terabytes of these, and a malformed line must be reported (or counted) rather than crash.
//
// The grammar is RFC 8259's, with one deliberate leniency: the bytes of a string need not be valid
// UTF-8. They are kept as they are (so decode(encode(text)) still gives the file's bytes back), and
// a \uD800-\uDFFF escape without its pair becomes its 3-byte (WTF-8) form; count_invalid_utf8 then
// counts them for the summary.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

enum class JsonlStatus {
  Ok,
  Malformed,  // not one JSON value; `why` says what and where (column, 1-based)
  NoField,    // an object without a string field `key` (or not an object)
};

// The deepest nesting of [ and { a line may have; deeper is Malformed, rather than risk the stack.
inline constexpr int kJsonlMaxDepth = 512;

// On Ok, `text` holds the decoded string of the top-level object's field `key` (the last one if
// the key repeats, as Python's json does).
JsonlStatus jsonl_field(std::string_view line, std::string_view key, std::string& text, std::string& why);

// Bytes of s that are not part of a well-formed UTF-8 character (Unicode 15 Table 3-7: no
// overlong forms, no surrogates, nothing above U+10FFFF).
uint64_t count_invalid_utf8(std::string_view s);

}  // namespace moe

namespace moe {

// The complaint about a line that is not Ok, e.g. `no string field "text" (expected {"text": "..."}
// per line; --text-key picks the field)`; callers prefix "path:line: ".
std::string jsonl_problem(JsonlStatus status, const std::string& why, std::string_view key);

}  // namespace moe
