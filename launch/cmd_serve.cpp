// `moe serve`: a checkpoint behind an HTTP API and a web page (docs/serving.md). This file opens
// the model and wires the parts: Generator (launch/generator.h) <- DecoderLoop (its thread) <-
// HttpServer (Beast, launch/http_server.h).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/tokenizer.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/model_source.h"
#include "launch/commands.h"
#include "launch/decoder_loop.h"
#include "launch/device.h"
#include "launch/generator.h"
#include "launch/http_server.h"
#include "launch/model_io.h"

namespace moe {
namespace {

using nlohmann::json;

// The validation loss at the model's step: the one the checkpoint or export records, else (for a
// checkpoint of a run) the run's metrics.jsonl (<run>/checkpoints/step-N -> <run>/metrics.jsonl),
// the last eval row at or before the step. null when neither says.
json recorded_val_loss(const ModelSource& src) {
  if (src.val_loss) return *src.val_loss;
  if (src.is_export()) return nullptr;
  std::filesystem::path metrics = std::filesystem::path(src.path).parent_path().parent_path() / "metrics.jsonl";
  std::ifstream in(metrics);
  json best = nullptr;
  int64_t best_step = -1;
  for (std::string line; std::getline(in, line);) {
    json row = json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.contains("val_loss") || !row.value("step", json()).is_number_integer()) continue;
    int64_t step = row["step"].get<int64_t>();
    if (step <= src.step && step >= best_step) best = row["val_loss"], best_step = step;
  }
  return best;
}

const char* kHelp =
    "usage: moe serve --checkpoint PATH [--host 127.0.0.1] [--port 8080] [--max-batch 16] [--max-queue N]\n"
    "                 [--max-body-bytes B] [--max-prompt-tokens P] [--max-tokens-limit M] [--threads N]\n"
    "                 [--device D] [--tokenizer T] [--precision fp32|bf16|fp8] [--sliding-window]\n"
    "\n"
    "Serves the model over HTTP: POST /v1/completions (OpenAI's completions API, streaming with\n"
    "\"stream\": true), GET /health, /info, /v1/models, and a web page at / (docs/serving.md).\n"
    "Requests from all clients are decoded together in one batch. Ctrl-C stops the server.\n"
    "\n"
    "  --checkpoint PATH       step-N folder, 'latest', checkpoints folder or export folder (required)\n"
    "  --host H                address to listen on (default 127.0.0.1: this machine only)\n"
    "  --port N                TCP port (default 8080; 0 = any free port, printed at start)\n"
    "  --max-batch N           sequences decoded together (default 16)\n"
    "  --max-queue N           requests waiting for a batch slot; more get 429 (default 64)\n"
    "  --max-body-bytes B      request bodies over B bytes get 413 (default 1048576)\n"
    "  --max-prompt-tokens P   longer prompts get 400 (default: the model's context)\n"
    "  --max-tokens-limit M    largest max_tokens a request may ask for (default: the context)\n"
    "  --sliding-window        let prompt + max_tokens exceed the context: a full sequence keeps its\n"
    "                          newest context/2 tokens and goes on (as moe generate --sliding-window)\n"
    "  --threads N             CPU threads (default: all cores)\n"
    "  --device D              auto | cpu | cuda (default auto: the GPU when there is one)\n"
    "  --tokenizer T           tokenizer to use (default: the one recorded in the checkpoint)\n"
    "  --precision P           fp32 | bf16 | fp8 GEMMs (default fp32, as moe generate)";

int64_t positive(const Args& a, const char* flag, int64_t fallback) {
  int64_t v = a.get_int(flag, fallback);
  if (v < 1) throw error("--", flag, ": ", v, " (expected >= 1)");
  return v;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  Args a(argc, argv, {"checkpoint", "host", "port", "max-batch", "max-queue", "max-body-bytes", "max-prompt-tokens",
                      "max-tokens-limit", "threads", "device", "tokenizer", "precision"}, {"sliding-window"});
  if (a.help()) {
    puts(kHelp);
    return 0;
  }
  if (!a.positional().empty()) throw error("moe serve: unexpected argument '", a.positional()[0], "' (see --help)");
  std::string checkpoint = a.required("checkpoint");
  const std::string host = a.get("host", "127.0.0.1");
  ServerOptions so;
  so.max_body_bytes = positive(a, "max-body-bytes", 1 << 20);
  const int64_t max_batch = positive(a, "max-batch", 16), max_queue = a.get_int("max-queue", 64);
  if (max_queue < 0) throw error("--max-queue: ", max_queue, " (expected >= 0)");
  // Listen first: a port in use fails at once, before seconds of model loading.
  HttpServer server(host, int(a.get_int("port", 8080)));

  set_num_threads(int(a.get_int("threads", 0)));
  DeviceChoice device = choose_device(a.get("device", "auto"), "--device", nullptr);
  ComputeScope on_device(*device.backend);
  const Precision precision = parse_precision_flag(a.get("precision", "fp32"), "--precision");
  const ModelSource src = open_model_source(checkpoint);  // a checkpoint or an export
  const Config& cfg = src.config;
  auto tok = open_tokenizer(src, a.get("tokenizer"));
  auto model = load_model(src);
  model->set_precision(precision);

  const int64_t context = cfg.data.seq_len;
  const int64_t max_prompt_tokens = positive(a, "max-prompt-tokens", context);
  if (max_prompt_tokens > context)
    throw error("--max-prompt-tokens: ", max_prompt_tokens, " (expected at most the model's context, ", context, ")");
  const bool sliding_window = a.has("sliding-window");
  const int64_t max_tokens_limit = positive(a, "max-tokens-limit", context);
  ParamCounts params = count_params(cfg.model);
  json info = {{"model", cfg.run.name},
               {"config", cfg.run.name},
               {"checkpoint", src.path},
               {"step", src.step},
               {"val_loss", recorded_val_loss(src)},
               {"parameters", params.total},
               {"active_parameters", params.active},
               {"precision", precision_name(precision)},
               {"context", context},
               {"vocab_size", cfg.model.vocab_size},
               {"tokenizer", tok->name()},
               {"device", device.description},
               {"max_batch", max_batch},
               {"sliding_window", sliding_window},
               {"kv_cache", {{"bytes_per_token", KVCache::bytes_per_token(cfg.model)},
                             {"full_kv_bytes_per_token", KVCache::full_kv_bytes_per_token(cfg.model)}}},
               {"limits", {{"max_body_bytes", so.max_body_bytes}, {"max_prompt_tokens", max_prompt_tokens},
                           {"max_tokens", max_tokens_limit}, {"max_queue", max_queue}}}};
  so.max_prompt_tokens = max_prompt_tokens;
  so.context = sliding_window ? INT64_MAX : context;
  so.api.max_tokens = max_tokens_limit;
  so.model_name = cfg.run.name;
  so.info = info;

  GeneratorOptions gopt;
  gopt.max_batch = max_batch;
  gopt.context = context;
  gopt.sliding_window = sliding_window;
  Generator gen(*model, *tok, gopt);
  DecoderLoop decoder(gen, max_batch + max_queue, stderr);
  printf("moe serve: %s (step %lld, %s) on %s, listening on http://%s:%d/\n", cfg.run.name.c_str(),
         (long long)src.step, precision_name(precision), device.description.c_str(), host.c_str(), server.port());
  fflush(stdout);
  server.run(std::move(so), decoder, *tok);
  return 0;
}

}  // namespace moe
