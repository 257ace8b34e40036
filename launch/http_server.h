// The HTTP side of `moe serve` (docs/serving.md), on Boost.Beast: routes, limits, the completions
// endpoint (whole answers and server-sent-event streams) and the web page. Generation itself runs
// on the DecoderLoop's thread; Boost stays inside http_server.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "launch/completion_api.h"
#include "launch/decoder_loop.h"

namespace moe {

struct ServerOptions {
  int64_t max_body_bytes = 1 << 20;   // larger bodies: 413
  int64_t max_prompt_tokens = 0;      // longer prompts: 400
  int64_t context = 0;                // prompt + max_tokens must fit (400)
  ApiLimits api;
  std::string model_name;             // "model" in responses and /v1/models
  nlohmann::json info;                // GET /info (model facts)
};

class HttpServer {
 public:
  // Binds the listening socket now, so a port in use is a moe::Error before the model loads:
  // "port 8080 is in use on 127.0.0.1 (...)". Port 0: any free port (port() tells which).
  HttpServer(const std::string& host, int port);
  ~HttpServer();
  int port() const;
  // Serves until SIGINT or SIGTERM, then stops `decoder` and returns. The tokenizer counts prompt
  // tokens for the limits.
  void run(ServerOptions opt, DecoderLoop& decoder, const Tokenizer& tok);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
