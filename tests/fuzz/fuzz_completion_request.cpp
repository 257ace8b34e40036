// The body of `moe serve`'s POST /v1/completions (launch/completion_api.h); Boost.Beast parses the
// HTTP around it. The server refuses a body only with ApiError (an HTTP 4xx with OpenAI's error
// JSON); anything else escaping would end the request with a 500 or worse.
// Properties of an accepted request: the sampling settings are inside the ranges the API promises.
#include <cmath>

#include "launch/completion_api.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  ApiLimits limits;
  CompletionRequest r;
  try {
    r = parse_completion_request(body, limits);
  } catch (const ApiError& e) {
    fuzz::expect(e.status >= 400 && e.status < 600, "an ApiError without a 4xx/5xx status");
    return 0;
  }
  const SamplingParams& p = r.sampling;
  fuzz::expect(std::isfinite(p.temperature) && p.temperature >= 0, "accepted a bad temperature");
  fuzz::expect(p.top_p > 0 && p.top_p <= 1, "accepted a bad top_p");
  fuzz::expect(p.top_k >= 0, "accepted a bad top_k");
  for (const std::string& s : p.stop) fuzz::expect(!s.empty(), "accepted an empty stop string");
  fuzz::expect(p.max_tokens >= 0 && p.max_tokens <= limits.max_tokens, "accepted a bad max_tokens");
  return 0;
}
