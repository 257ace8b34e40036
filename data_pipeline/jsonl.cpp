#include "data_pipeline/jsonl.h"

#include <cstring>

namespace moe {
namespace {

void put_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12), out += char(0x80 | (cp >> 6 & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18), out += char(0x80 | (cp >> 12 & 0x3F)), out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// A recursive-descent scanner over one line. Values other than the wanted field are only
// validated; strings are decoded only when `out` is given.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  JsonlStatus run(std::string_view key, std::string& text, std::string& why) {
    bool found = false;
    skip_ws();
    if (at_end()) return fail(why, "empty line at column 1");
    if (peek() == '{') {
      if (!object(key, text, found)) return fail(why, err_);
    } else if (!value(0)) {
      return fail(why, err_);
    }
    skip_ws();
    if (!at_end()) return fail(why, "unexpected " + shown() + " after the JSON value at column " + std::to_string(i_ + 1));
    return found ? JsonlStatus::Ok : JsonlStatus::NoField;
  }

 private:
  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return s_[i_]; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  std::string shown() const {
    if (at_end()) return "end of line";
    unsigned char c = static_cast<unsigned char>(s_[i_]);
    return c >= 0x20 && c < 0x7F ? std::string("'") + char(c) + "'" : "byte " + std::to_string(c);
  }
  bool err(const std::string& what) {
    err_ = what + " at column " + std::to_string(i_ + 1);
    return false;
  }
  JsonlStatus fail(std::string& why, const std::string& what) {
    why = what;
    return JsonlStatus::Malformed;
  }

  // The top-level object: remembers the last string value under `key`.
  bool object(std::string_view key, std::string& text, bool& found) {
    ++i_;  // '{'
    skip_ws();
    if (!at_end() && peek() == '}') return ++i_, true;
    std::string name;
    for (;;) {
      skip_ws();
      if (at_end() || peek() != '"') return err("expected a \"key\" but found " + shown());
      name.clear();
      if (!string(&name)) return false;
      skip_ws();
      if (at_end() || peek() != ':') return err("expected ':' but found " + shown());
      ++i_;
      skip_ws();
      if (name == key && !at_end() && peek() == '"') {
        text.clear();
        if (!string(&text)) return false;
        found = true;
      } else {
        if (name == key) found = false;  // a later non-string value wins, as in Python
        if (!value(1)) return false;
      }
      skip_ws();
      if (at_end()) return err("unterminated object: expected ',' or '}' but found end of line");
      if (peek() == '}') return ++i_, true;
      if (peek() != ',') return err("expected ',' or '}' but found " + shown());
      ++i_;
    }
  }

  bool value(int depth) {
    skip_ws();
    if (at_end()) return err("expected a value but found end of line");
    switch (peek()) {
      case '"': return string(nullptr);
      case '{': return container(depth, '}');
      case '[': return container(depth, ']');
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }

  // A container at depth d (0: the line's top level) is nesting level d + 1.
  bool container(int depth, char close) {
    if (depth >= kJsonlMaxDepth) return err("nesting deeper than " + std::to_string(kJsonlMaxDepth));
    ++i_;
    skip_ws();
    if (!at_end() && peek() == close) return ++i_, true;
    for (;;) {
      skip_ws();
      if (close == '}') {
        if (at_end() || peek() != '"') return err("expected a \"key\" but found " + shown());
        if (!string(nullptr)) return false;
        skip_ws();
        if (at_end() || peek() != ':') return err("expected ':' but found " + shown());
        ++i_;
      }
      if (!value(depth + 1)) return false;
      skip_ws();
      if (at_end()) return err(std::string("unterminated ") + (close == '}' ? "object" : "array"));
      if (peek() == close) return ++i_, true;
      if (peek() != ',') return err(std::string("expected ',' or '") + close + "' but found " + shown());
      ++i_;
    }
  }

  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.substr(i_, n) != word) return err("unexpected " + shown());
    i_ += n;
    return true;
  }

  bool number() {
    size_t start = i_;
    auto digits = [&] {
      size_t b = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ > b;
    };
    if (!at_end() && peek() == '-') ++i_;
    if (!at_end() && peek() == '0') {
      ++i_;
    } else if (!digits()) {
      i_ = start;
      return err("unexpected " + shown());
    }
    if (!at_end() && peek() == '.') {
      ++i_;
      if (!digits()) return err("expected a digit after '.' but found " + shown());
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++i_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++i_;
      if (!digits()) return err("expected a digit in the exponent but found " + shown());
    }
    return true;
  }

  int hex4() {
    if (i_ + 4 > s_.size()) return -1;
    int v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_ + size_t(k)];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    i_ += 4;
    return v;
  }

  // A string starting at '"'; appends its decoded bytes to *out when out is given.
  bool string(std::string* out) {
    ++i_;
    for (;;) {
      size_t run = i_;  // copy runs of plain bytes at once
      while (i_ < s_.size() && s_[i_] != '"' && s_[i_] != '\\' && static_cast<unsigned char>(s_[i_]) >= 0x20) ++i_;
      if (out) out->append(s_.data() + run, i_ - run);
      if (at_end()) return err("unterminated string");
      char c = peek();
      if (c == '"') return ++i_, true;
      if (c != '\\') return err("control character " + shown() + " in a string (expected it escaped)");
      ++i_;
      if (at_end()) return err("unterminated string");
      char e = s_[i_++];
      char plain = e == '"' ? '"' : e == '\\' ? '\\' : e == '/' ? '/' : e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n'
                 : e == 'r' ? '\r' : e == 't' ? '\t' : 0;
      if (plain) {
        if (out) *out += plain;
        continue;
      }
      if (e != 'u') return --i_, err("invalid escape '\\" + std::string(1, e) + "'");
      int cp = hex4();
      if (cp < 0) return err("expected 4 hex digits after \\u");
      uint32_t code = uint32_t(cp);
      if (code >= 0xD800 && code < 0xDC00 && s_.substr(i_, 2) == "\\u") {
        size_t save = i_;
        i_ += 2;
        int lo = hex4();
        if (lo >= 0xDC00 && lo < 0xE000)
          code = 0x10000 + ((code - 0xD800) << 10) + uint32_t(lo - 0xDC00);
        else
          i_ = save;  // not a low surrogate: the high one stands alone
      }
      if (out) put_utf8(code, *out);
    }
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string err_;
};

}  // namespace

JsonlStatus jsonl_field(std::string_view line, std::string_view key, std::string& text, std::string& why) {
  return Scanner(line).run(key, text, why);
}

uint64_t count_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  uint64_t bad = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Second-byte bounds per lead byte (Table 3-7); the remaining bytes are 80..BF.
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    size_t k = 1;
    if (len && i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi)
      for (k = 2; k < len && i + k < n && p[i + k] >= 0x80 && p[i + k] <= 0xBF;) ++k;
    if (len && k == len) {
      i += len;
    } else {
      ++bad;  // the lead byte; what follows is judged on its own
      ++i;
    }
  }
  return bad;
}

}  // namespace moe

namespace moe {

std::string jsonl_problem(JsonlStatus status, const std::string& why, std::string_view key) {
  if (status == JsonlStatus::Malformed) return "not valid JSON: " + why + " (expected one JSON object per line)";
  std::string k(key);
  return "no string field \"" + k + "\" (expected {\"" + k + "\": \"...\"} per line; --text-key picks the field)";
}

}  // namespace moe
