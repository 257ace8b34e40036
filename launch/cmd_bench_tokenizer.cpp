// `moe bench tokenizer --tokenizer T --input FILE [--workers N]`: encode speed, one JSON line.
// The file is cut where the tokenizer's cut rule allows (tokenizer.h), so the workers together
// produce exactly the ids of one whole-file encode (a tokenizer with no safe cut is cut anywhere). Each run starts from a freshly loaded
// tokenizer (empty piece caches): the number is what preprocess sees on new text.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_pipeline/tokenizer.h"
#include "framework/error.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe bench tokenizer --tokenizer T --input FILE [--workers N] [--repeat R]\n"
    "\n"
    "Encodes FILE and prints one JSON line: bytes, tokens, seconds, mb_per_s (best of R runs).\n"
    "\n"
    "  --tokenizer T   byte, a tokenizer.json or a SentencePiece .model\n"
    "  --input FILE    text to encode (read into memory first; not timed)\n"
    "  --workers N     encoding threads (default 1)\n"
    "  --repeat R      runs, each with a freshly loaded tokenizer (default 3)\n";

}  // namespace

int cmd_bench_tokenizer(int argc, char** argv) {
  Args a(argc, argv, {"tokenizer", "input", "workers", "repeat"}, {});
  if (a.help()) return std::fputs(kUsage, stdout), 0;
  const std::string spec = a.required("tokenizer"), path = a.required("input");
  const long long workers = a.get_int("workers", 1), repeat = a.get_int("repeat", 3);
  if (workers < 1 || workers > 4096) throw error("--workers ", workers, ": out of range (expected 1..4096)");
  if (repeat < 1 || repeat > 1000) throw error("--repeat ", repeat, ": out of range (expected 1..1000)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot read (expected a text file)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.empty()) throw error(path, ": empty (expected some text)");
  set_num_threads(int(workers));

  // About 8 parts per worker, so that uneven parts still balance.
  CutRule rule = make_tokenizer(spec)->cut_rule();
  if (rule == CutRule::Nowhere) rule = CutRule::Anywhere;
  std::vector<std::string_view> parts;
  const size_t target = std::max<size_t>(4096, text.size() / size_t(8 * workers));
  for (size_t pos = 0; pos < text.size();) {
    size_t cut = next_cut(rule, text, std::min(text.size(), pos + target));
    parts.push_back(std::string_view(text).substr(pos, cut - pos));
    pos = cut;
  }
  std::vector<int64_t> tokens(parts.size());
  double best = 1e30;
  std::string name;
  int64_t vocab = 0;
  for (long long r = 0; r < repeat; ++r) {
    auto tok = make_tokenizer(spec);
    name = tok->name(), vocab = tok->vocab_size();
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(int64_t(parts.size()), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const std::string_view part = parts[size_t(i)];
        tokens[size_t(i)] = int64_t((i == 0 ? tok->encode(part) : tok->encode_continuation(part)).size());
      }
    });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  int64_t total = 0;
  for (int64_t n : tokens) total += n;
  nlohmann::ordered_json j = {{"bench", "tokenizer"},
                              {"tokenizer", name},
                              {"vocab_size", vocab},
                              {"input", path},
                              {"bytes", text.size()},
                              {"tokens", total},
                              {"bytes_per_token", std::round(double(text.size()) / double(std::max<int64_t>(total, 1)) * 1000) / 1000},
                              {"workers", workers},
                              {"seconds", std::round(best * 1e4) / 1e4},
                              {"mb_per_s", std::round(double(text.size()) / 1e6 / best * 100) / 100}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace moe
