// One .jsonl corpus line -> its "text" field (data_pipeline/jsonl.h), the parser preprocess runs on
// every line of a corpus. Properties: the decoded text is never longer than the line (escapes only
// shrink or keep size), and on valid UTF-8 it agrees with nlohmann's full parser: both accept the
// line or both refuse it, and an object's "text" string is the same. (Lines with a \uD800-\uDFFF
// escape are left out of the comparison: a lone one is jsonl.h's deliberate leniency; so are lines
// with a NUL byte, where nlohmann's lexer stops as if at the end of the input, and lines nested
// deeper than jsonl.cpp's limit, which nlohmann has none of.)
#include <nlohmann/json.hpp>

#include "data_pipeline/jsonl.h"
#include "framework/json_depth.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;



static bool has_surrogate_escape(std::string_view s) {
  for (size_t i = 0; i + 3 < s.size(); ++i)
    if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D') &&
        std::string_view("89abcdefABCDEF").find(s[i + 3]) != std::string_view::npos)
      return true;
  return false;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  std::string text, why;
  const JsonlStatus s = jsonl_field(line, "text", text, why);
  (void)count_invalid_utf8(line);
  if (count_invalid_utf8(line) == 0 && !has_surrogate_escape(line) && line.find('\0') == std::string_view::npos &&
      json_depth(line) <= kJsonlMaxDepth) {
    nlohmann::json j;
    bool malformed = false;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error&) {
      malformed = true;
    } catch (const nlohmann::json::out_of_range&) {
      return 0;  // a number beyond double's range: valid JSON (RFC 8259 sets no limit), nlohmann refuses it
    }
    fuzz::expect(malformed == (s == JsonlStatus::Malformed), "jsonl_field and nlohmann disagree on validity");
    const bool has_text = !malformed && j.is_object() && j.contains("text") && j["text"].is_string();
    fuzz::expect(has_text == (s == JsonlStatus::Ok), "jsonl_field and nlohmann disagree on the text field");
    if (has_text) fuzz::expect(j["text"].get<std::string>() == text, "jsonl_field and nlohmann decode different text");
  }
  if (s == JsonlStatus::Ok) {
    fuzz::expect(text.size() <= line.size(), "decoded text longer than its line");
    (void)count_invalid_utf8(text);
  } else {
    fuzz::expect(!jsonl_problem(s, why, "text").empty(), "a refused line without a reason");
  }
  return 0;
}
