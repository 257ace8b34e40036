// How deep a JSON text nests, read before it is parsed. nlohmann::json parses any depth, but
// printing a value (every error message that quotes one) and comparing values recurse, so a file
// like `[[[[...]]]]` a hundred thousand deep would overflow the stack (found by tests/fuzz). Every
// JSON file a user hands us goes through check_json_depth first; none of our formats nests deeper
// than a handful of levels.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace moe {

inline constexpr int kMaxJsonDepth = 64;

// The deepest [ / { nesting outside strings (of well-formed or malformed text alike).
int json_depth(std::string_view text);

// Throws moe::Error "<source>: JSON nested deeper than <limit> levels (expected <expected>)".
void check_json_depth(std::string_view text, const std::string& source, const std::string& expected,
                      int limit = kMaxJsonDepth);

// A user's JSON file, parsed after check_json_depth. Errors name the file: "<path>: cannot read
// (expected <expected>)", the depth error, or "<path>: not JSON (<parser's message>)".
nlohmann::json read_json_file(const std::string& path, const std::string& expected);

}  // namespace moe
