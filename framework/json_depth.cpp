#include "framework/json_depth.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "framework/error.h"

namespace moe {

int json_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

void check_json_depth(std::string_view text, const std::string& source, const std::string& expected, int limit) {
  if (json_depth(text) > limit)
    throw error(source, ": JSON nested deeper than ", limit, " levels (expected ", expected, ")");
}

nlohmann::json read_json_file(const std::string& path, const std::string& expected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot read (expected ", expected, ")");
  std::stringstream text;
  text << in.rdbuf();
  check_json_depth(text.str(), path, expected);
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw error(path, ": not JSON (", e.what(), ")");
  }
}

}  // namespace moe
