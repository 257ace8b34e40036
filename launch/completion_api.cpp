#include "launch/completion_api.h"

#include <cmath>
#include <set>

#include "framework/json_depth.h"

namespace moe {
namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, param + ": " + message, param); }

std::string type_name(const json& v) { return v.is_number_integer() ? "an integer" : std::string("a ") + v.type_name(); }

int64_t get_int(const json& v, const std::string& key, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw bad(key, "expected an integer, got " + type_name(v));
  // Unsigned values past int64 are out of any range here.
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) throw bad(key, "must be at most " + std::to_string(hi));
  int64_t x = v.get<int64_t>();
  if (x < lo) throw bad(key, "must be at least " + std::to_string(lo) + ", got " + std::to_string(x));
  if (x > hi) throw bad(key, "must be at most " + std::to_string(hi) + ", got " + std::to_string(x));
  return x;
}

double get_number(const json& v, const std::string& key) {
  if (!v.is_number()) throw bad(key, "expected a number, got " + type_name(v));
  double x = v.get<double>();
  if (!std::isfinite(x)) throw bad(key, "must be a finite number");
  return x;
}

bool get_bool(const json& v, const std::string& key) {
  if (!v.is_boolean()) throw bad(key, "expected true or false, got " + type_name(v));
  return v.get<bool>();
}

std::vector<std::string> get_stop(const json& v) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 16) throw bad("stop", "at most 16 stop strings");
    for (const json& s : v) {
      if (!s.is_string()) throw bad("stop", "expected strings, got " + type_name(s));
      out.push_back(s.get<std::string>());
    }
  } else {
    throw bad("stop", "expected a string or an array of strings, got " + type_name(v));
  }
  for (const std::string& s : out)
    if (s.empty()) throw bad("stop", "stop strings must not be empty");
  return out;
}

// Standard keys the server accepts only at the value that asks for nothing it would ignore.
void check_neutral(const std::string& key, const json& v) {
  auto is_number = [&](double x) { return v.is_number() && v.get<double>() == x; };
  bool ok = (key == "n" || key == "best_of") ? is_number(1)
            : (key == "presence_penalty" || key == "frequency_penalty") ? is_number(0)
            : key == "echo" ? v == false
            : key == "logit_bias" ? (v.is_object() && v.empty())
            : v.is_null();  // logprobs, suffix
  if (!ok && !v.is_null()) throw bad(key, "is not supported by this server (only its default value)");
}

}  // namespace

ApiError::ApiError(int status, std::string message, std::string param, std::string type)
    : std::runtime_error(std::move(message)), status(status), type(std::move(type)), param(std::move(param)) {}

CompletionRequest parse_completion_request(const std::string& body, const ApiLimits& limits) {
  if (json_depth(body) > limits.max_json_depth)
    throw ApiError(400, "the JSON body is nested deeper than " + std::to_string(limits.max_json_depth) + " levels");
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw ApiError(400, "the body is not valid JSON");
  if (!j.is_object()) throw ApiError(400, "the body must be a JSON object, got " + type_name(j));

  CompletionRequest r;
  r.sampling.max_tokens = 16;
  r.sampling.temperature = 1.0;
  bool has_prompt = false;
  static const std::set<std::string> kNeutral = {"n", "best_of", "echo", "logprobs", "suffix",
                                                 "presence_penalty", "frequency_penalty", "logit_bias"};
  for (const auto& [key, v] : j.items()) {
    if (key == "prompt") {
      if (!v.is_string()) throw bad(key, "expected a string, got " + type_name(v));
      r.prompt = v.get<std::string>();
      has_prompt = true;
    } else if (key == "max_tokens") {
      if (!v.is_null()) r.sampling.max_tokens = get_int(v, key, 0, limits.max_tokens);
    } else if (key == "temperature") {
      if (!v.is_null()) r.sampling.temperature = get_number(v, key);
      if (r.sampling.temperature < 0) throw bad(key, "must be >= 0 (0 = greedy)");
    } else if (key == "top_p") {
      if (!v.is_null()) r.sampling.top_p = get_number(v, key);
      if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) throw bad(key, "must be in (0, 1]");
    } else if (key == "top_k") {
      if (!v.is_null()) r.sampling.top_k = get_int(v, key, 0, INT64_MAX);
    } else if (key == "seed") {
      if (!v.is_null()) r.sampling.seed = v.is_number_unsigned() ? v.get<uint64_t>() : uint64_t(get_int(v, key, 0, INT64_MAX));
    } else if (key == "stop") {
      r.sampling.stop = get_stop(v);
    } else if (key == "stream") {
      r.stream = v.is_null() ? false : get_bool(v, key);
    } else if (key == "model" || key == "user") {
      if (!v.is_string() && !v.is_null()) throw bad(key, "expected a string, got " + type_name(v));
    } else if (key == "stream_options") {
      if (!v.is_object() && !v.is_null()) throw bad(key, "expected an object, got " + type_name(v));
    } else if (kNeutral.count(key)) {
      check_neutral(key, v);
    } else {
      throw bad(key, "unknown field (see docs/serving.md for the accepted ones)");
    }
  }
  if (!has_prompt) throw bad("prompt", "required (a string)");
  return r;
}

int64_t check_prompt_fits(const std::string& prompt, const Tokenizer& tok, int64_t max_tokens,
                          int64_t max_prompt_tokens, int64_t context) {
  int64_t n;
  try {
    n = int64_t(tok.encode(prompt).size());
  } catch (const std::exception& e) {
    throw ApiError(400, std::string("prompt: cannot be encoded: ") + e.what(), "prompt");
  }
  n = std::max<int64_t>(n, 1);  // an empty prompt starts with EOS
  if (n > max_prompt_tokens)
    throw ApiError(400, "prompt: " + std::to_string(n) + " tokens, more than the limit of " +
                            std::to_string(max_prompt_tokens), "prompt");
  if (max_tokens > context - n)
    throw ApiError(400, "max_tokens: the prompt's " + std::to_string(n) + " tokens + max_tokens " +
                            std::to_string(max_tokens) + " exceed the model's context of " + std::to_string(context) +
                            " tokens", "max_tokens");
  return n;
}

const char* api_finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::Length: return "length";
    case FinishReason::Stop:
    case FinishReason::Eos: return "stop";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::None: break;
  }
  return nullptr;
}

namespace {
json usage(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}
json finish_json(FinishReason f) { return f == FinishReason::None ? json(nullptr) : json(api_finish_reason(f)); }
}  // namespace

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

size_t utf8_complete_prefix(const std::string& text) {
  // Look back at most 3 bytes for the lead byte of a character that is still incomplete.
  size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

json completion_response(const CompletionIds& ids, const std::string& text, FinishReason finish,
                         int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"id", ids.id}, {"object", "text_completion"}, {"created", ids.created}, {"model", ids.model},
          {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish)}}})},
          {"usage", usage(prompt_tokens, completion_tokens)}};
}

std::string completion_chunk_event(const CompletionIds& ids, const std::string& text, FinishReason finish,
                                   int64_t prompt_tokens, int64_t completion_tokens) {
  json j = {{"id", ids.id}, {"object", "text_completion"}, {"created", ids.created}, {"model", ids.model},
            {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish)}}})}};
  if (finish != FinishReason::None) j["usage"] = usage(prompt_tokens, completion_tokens);
  return "data: " + dump_json(j) + "\n\n";
}

json error_body(const ApiError& e) {
  return {{"error", {{"message", e.what()}, {"type", e.type}, {"param", e.param.empty() ? json(nullptr) : json(e.param)}}}};
}

}  // namespace moe
