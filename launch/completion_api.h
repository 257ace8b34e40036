// The JSON of `moe serve`'s POST /v1/completions, in the shape of OpenAI's completions API
// (docs/serving.md): the request parsed and validated into SamplingParams, and the response,
// stream-chunk and error bodies. No I/O here, so every rule is unit tested
// (tests/unit/test_launch_completion_api.cpp).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "launch/generator.h"

namespace moe {

// A request the server refuses: the HTTP status (4xx/5xx), and the fields of OpenAI's error body
// {"error": {"message", "type", "param"}}; param is the offending JSON key ("" = none).
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "",
           std::string type = "invalid_request_error");
  int status;
  std::string type, param;
};

struct ApiLimits {
  int64_t max_tokens = 1024;   // largest max_tokens a request may ask for (--max-tokens-limit)
  int max_json_depth = 32;     // deeper nesting is refused before it is parsed
};

struct CompletionRequest {
  std::string prompt;
  SamplingParams sampling;
  bool stream = false;
};

// Parses and validates a request body. Defaults follow OpenAI: max_tokens 16, temperature 1,
// top_p 1, no top-k (0 = all), seed 0. Throws ApiError (400) naming the key for malformed JSON,
// nesting deeper than limits.max_json_depth, a body that is not an object, a wrong type or value
// (temperature < 0 or not finite, top_p outside (0, 1], top_k < 0, max_tokens outside
// [0, limits.max_tokens], an empty stop string, more than 16 stop strings), and an unknown key.
// Standard OpenAI keys that change nothing here are accepted: model and user (any string),
// stream_options, and n, best_of, echo, logprobs, suffix, presence_penalty, frequency_penalty,
// logit_bias at their neutral values (1, 1, false, null, null, 0, 0, {}); any other value of
// them is a 400 naming the key, since the server cannot honour it.
CompletionRequest parse_completion_request(const std::string& body, const ApiLimits& limits);

// The prompt's token count, checked against `max_prompt_tokens` and, with max_tokens, against the
// context a sequence may fill (ApiError 400, param "prompt" / "max_tokens"; INT64_MAX: no such limit).
int64_t check_prompt_fits(const std::string& prompt, const Tokenizer& tok, int64_t max_tokens,
                          int64_t max_prompt_tokens, int64_t context);

// OpenAI's finish_reason: "length" at max_tokens, "stop" at a stop string or the end of a document.
const char* api_finish_reason(FinishReason r);

struct CompletionIds {
  std::string id;     // "cmpl-<n>"
  int64_t created;    // unix seconds
  std::string model;  // the served model's name
};
// The whole non-streamed answer.
nlohmann::json completion_response(const CompletionIds& ids, const std::string& text, FinishReason finish,
                                   int64_t prompt_tokens, int64_t completion_tokens);
// One server-sent event of a stream: "data: {...}\n\n" with choices[0].text (and finish_reason, a
// string on the last chunk, else null; the last chunk also carries usage).
std::string completion_chunk_event(const CompletionIds& ids, const std::string& text, FinishReason finish,
                                   int64_t prompt_tokens, int64_t completion_tokens);
// {"error": {"message", "type", "param"}} (param null when empty).
nlohmann::json error_body(const ApiError& e);
// Compact JSON text; invalid UTF-8 in strings becomes U+FFFD instead of an exception.
std::string dump_json(const nlohmann::json& j);
// How many leading bytes of `text` end on a whole UTF-8 character: a stream sends those and holds
// the rest back, since a byte tokenizer emits a multi-byte character one byte per token.
size_t utf8_complete_prefix(const std::string& text);

}  // namespace moe
