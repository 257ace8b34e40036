// `moe generate`: one prompt streamed to stdout, or a file of prompts decoded as one batch
// (launch/generator.h) with one JSON line per prompt.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/tokenizer.h"
#include "framework/precision.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device.h"
#include "launch/generator.h"
#include "launch/model_source.h"

namespace moe {
namespace {

struct PromptLine {
  std::string text;
  SamplingParams sampling;
};

// Per-prompt settings a JSONL line may give; the flags' values are the defaults.
void read_sampling_keys(const nlohmann::json& j, SamplingParams& s, const std::string& where) {
  static const char* known[] = {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "stop"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(std::begin(known), std::end(known), it.key()) == std::end(known))
      throw error(where, ": unknown key '", it.key(), "' (expected prompt, max_tokens, temperature, top_k, top_p, "
                  "seed, stop)");
  auto number = [&](const char* key, auto& out, bool integer) {
    if (!j.contains(key)) return;
    const nlohmann::json& v = j[key];
    if (!v.is_number() || (integer && !v.is_number_integer()))
      throw error(where, ": '", key, "' must be ", integer ? "an integer" : "a number");
    out = v.get<std::decay_t<decltype(out)>>();
  };
  number("max_tokens", s.max_tokens, true);
  number("temperature", s.temperature, false);
  number("top_k", s.top_k, true);
  number("top_p", s.top_p, false);
  if (j.contains("seed")) {
    if (!j["seed"].is_number_unsigned()) throw error(where, ": 'seed' must be an integer >= 0");
    s.seed = j["seed"].get<uint64_t>();
  }
  if (j.contains("stop")) {
    const nlohmann::json& v = j["stop"];
    s.stop.clear();
    if (v.is_string()) {
      s.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      for (const auto& e : v) {
        if (!e.is_string()) throw error(where, ": 'stop' must be a string or an array of strings");
        s.stop.push_back(e.get<std::string>());
      }
    } else {
      throw error(where, ": 'stop' must be a string or an array of strings");
    }
  }
  validate_sampling(s, where + ": ");
}

// FILE.jsonl: one JSON object per line ({"prompt": ..., and optionally the sampling keys});
// any other file: one prompt per line. Blank lines are skipped.
std::vector<PromptLine> read_prompts(const std::string& path, const SamplingParams& defaults) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot read the prompts file");
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  std::vector<PromptLine> prompts;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    PromptLine p{line, defaults};
    if (jsonl) {
      const std::string where = path + ":" + std::to_string(n);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) throw error(where, ": not a JSON object (expected {\"prompt\": \"...\", ...})");
      if (!j.contains("prompt") || !j["prompt"].is_string()) throw error(where, ": 'prompt' (a string) is missing");
      p.text = j["prompt"].get<std::string>();
      read_sampling_keys(j, p.sampling, where);
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) throw error(path, ": no prompts (expected one per line", jsonl ? ", as JSON objects)" : ")");
  return prompts;
}

// Decodes every prompt as one batch; prints a JSON line per prompt, in file order.
void generate_batch(Generator& gen, const std::vector<PromptLine>& prompts) {
  std::map<int64_t, size_t> index_of;
  std::vector<std::string> text(prompts.size());
  std::vector<nlohmann::ordered_json> done(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      index_of[gen.submit(prompts[i].text, prompts[i].sampling)] = i;
    } catch (const Error& e) {
      throw error("prompt ", i + 1, ": ", e.what());
    }
  }
  size_t printed = 0;
  while (!gen.idle()) {
    for (const GenerationEvent& e : gen.step()) {
      const size_t i = index_of.at(e.id);
      text[i] += e.text;
      if (e.finish == FinishReason::None) continue;
      done[i] = {{"index", i},
                 {"prompt", prompts[i].text},
                 {"text", text[i]},
                 {"finish_reason", finish_reason_name(e.finish)},
                 {"prompt_tokens", e.prompt_tokens},
                 {"completion_tokens", e.completion_tokens}};
    }
    for (; printed < prompts.size() && !done[printed].is_null(); ++printed) {
      puts(done[printed].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      fflush(stdout);
    }
  }
}

// One prompt: the prompt, then the text as it is produced.
void generate_one(Generator& gen, const std::string& prompt, const SamplingParams& s) {
  gen.submit(prompt, s);
  fputs(prompt.c_str(), stdout);
  fflush(stdout);
  while (!gen.idle())
    for (const GenerationEvent& e : gen.step()) {
      fwrite(e.text.data(), 1, e.text.size(), stdout);
      fflush(stdout);
    }
  fputc('\n', stdout);
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  Args a(argc, argv,
         {"checkpoint", "prompt", "prompts", "max-tokens", "temperature", "top-k", "top-p", "seed", "stop...",
          "batch", "precision", "threads", "device", "tokenizer"},
         {"no-cache", "sliding-window", "no-eos-stop"});
  if (a.help()) {
    puts("usage: moe generate --checkpoint PATH (--prompt TEXT | --prompts FILE) [--max-tokens N]\n"
         "                    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STRING]...\n"
         "\n"
         "Samples continuations with the model's latent KV cache. One --prompt is streamed to stdout as it\n"
         "is generated; --prompts FILE decodes every prompt of the file as one batch and prints one JSON\n"
         "line per prompt (index, prompt, text, finish_reason, prompt_tokens, completion_tokens) in order.\n"
         "\n"
         "  --checkpoint PATH  step-N folder, 'latest' link or checkpoints folder (required)\n"
         "  --prompt TEXT      text to continue (may be empty: a new document)\n"
         "  --prompts FILE     one prompt per line; FILE.jsonl: one {\"prompt\": ...} object per line, which\n"
         "                     may also set max_tokens, temperature, top_k, top_p, seed and stop\n"
         "  --max-tokens N     tokens to generate at most (default 200)\n"
         "  --temperature T    softmax temperature, 0 = greedy (default 0.8)\n"
         "  --top-k K          sample among the K most likely tokens, 0 = all (default 0)\n"
         "  --top-p P          nucleus sampling: smallest set with probability >= P (default 1.0)\n"
         "  --seed S           sampling seed (default 0); a prompt with a seed always gives the same text,\n"
         "                     whatever else is in the batch\n"
         "  --stop STRING      end a sequence at STRING (not printed); repeatable\n"
         "  --no-eos-stop      go on past the tokenizer's end-of-document token\n"
         "  --batch N          sequences decoded together (default 16)\n"
         "  --sliding-window   let prompt + output exceed the trained context: when a sequence fills it, its\n"
         "                     newest context/2 tokens are prefilled again and decoding goes on\n"
         "  --no-cache         re-run the whole window for every token (the reference path; slow)\n"
         "  --precision P      fp32 | bf16 | fp8 GEMMs (default fp32)\n"
         "  --threads N        CPU threads (default: all cores)\n"
         "  --device D         auto | cpu | cuda (default auto: the GPU when there is one)\n"
         "  --tokenizer T      tokenizer to use (default: the one recorded in the checkpoint)");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe generate: unexpected argument '", a.positional()[0], "' (see --help)");
  if (a.has("prompt") == a.has("prompts")) throw error("moe generate: give --prompt TEXT or --prompts FILE (one of them)");
  SamplingParams s;
  s.max_tokens = a.get_int("max-tokens", 200);
  s.top_k = a.get_int("top-k", 0);
  s.temperature = a.get_double("temperature", 0.8);
  s.top_p = a.get_double("top-p", 1.0);
  s.seed = uint64_t(a.get_int("seed", 0));
  s.stop = a.all("stop");
  s.stop_at_eos = !a.has("no-eos-stop");
  if (s.max_tokens < 0) throw error("--max-tokens: ", s.max_tokens, " (expected >= 0)");
  if (!(s.temperature >= 0)) throw error("--temperature: ", s.temperature, " (expected >= 0)");
  if (s.top_k < 0) throw error("--top-k: ", s.top_k, " (expected >= 0)");
  if (!(s.top_p > 0 && s.top_p <= 1)) throw error("--top-p: ", s.top_p, " (expected 0 < P <= 1)");
  for (const std::string& stop : s.stop)
    if (stop.empty()) throw error("--stop: an empty string (expected at least one character)");
  GeneratorOptions opt;
  opt.max_batch = a.get_int("batch", 16);
  if (opt.max_batch < 1) throw error("--batch: ", opt.max_batch, " (expected >= 1)");
  opt.use_cache = !a.has("no-cache");
  opt.sliding_window = a.has("sliding-window");
  const Precision precision = parse_precision_flag(a.get("precision", "fp32"), "--precision");
  std::vector<PromptLine> prompts;
  if (a.has("prompts")) prompts = read_prompts(a.get("prompts"), s);  // bad input before the model loads
  set_num_threads(int(a.get_int("threads", 0)));
  ComputeScope on_device(*choose_device(a.get("device", "auto"), "--device", nullptr).backend);

  const ModelSource src = open_model_source(a.required("checkpoint"));  // a checkpoint or an export
  const Config& cfg = src.config;
  auto tok = open_tokenizer(src, a.get("tokenizer"));
  auto model = load_model(src);

  model->set_precision(precision);
  opt.context = cfg.data.seq_len;
  if (prompts.empty()) opt.max_batch = 1;
  Generator gen(*model, *tok, opt);
  if (prompts.empty())
    generate_one(gen, a.get("prompt"), s);
  else
    generate_batch(gen, prompts);
  return 0;
}

}  // namespace moe
