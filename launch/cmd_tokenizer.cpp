// `moe tokenizer train|encode|decode`: train a byte-level BPE tokenizer.json on a corpus, and turn
// text into ids and back on stdin/stdout (one line of ids per line of text).
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_pipeline/bpe_train.h"
#include "data_pipeline/corpus.h"
#include "data_pipeline/tokenizer.h"
#include "framework/error.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* kUsage =
    "usage: moe tokenizer <command> [flags]   (moe tokenizer <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  train    learn a byte-level BPE vocabulary from a corpus; writes a Hugging Face tokenizer.json\n"
    "  encode   text on stdin -> token ids on stdout, one line of ids per line of text\n"
    "  decode   token ids on stdin -> text on stdout, the reverse of encode\n";

const char* kTrainUsage =
    "usage: moe tokenizer train --input PATH... --vocab-size N --output FILE.json [flags]\n"
    "\n"
    "Learns a byte-level BPE vocabulary (docs/formats.md, \"Tokenizers\") and writes it as a Hugging Face\n"
    "tokenizer.json. The same corpus and flags always give the same file. Prints a JSON summary line.\n"
    "\n"
    "  --input PATH...        files or folders, as for moe preprocess (*.txt: one document per file;\n"
    "                         *.jsonl: one document per line, the --text-key field)\n"
    "  --vocab-size N         tokens in all: special tokens + 256 bytes + merges (fewer if the corpus\n"
    "                         runs out of pairs)\n"
    "  --output FILE.json     written whole or not at all\n"
    "  --pre-tokenizer P      gpt2 (default), llama3, or gpt2-digits (every digit its own piece, as SmolLM)\n"
    "  --special TOKEN        an extra special token (repeatable); <|endoftext|> is always id 0 and\n"
    "                         is the end-of-document token\n"
    "  --text-key K           the .jsonl field holding the text (default text)\n"
    "  --workers N            threads for counting words (default 0 = all cores); no effect on the result\n";

const char* kEncodeUsage =
    "usage: moe tokenizer encode --tokenizer T < text > ids\n"
    "\n"
    "Encodes each line of stdin (without its newline) and prints its token ids separated by spaces,\n"
    "one output line per input line. T is byte, a tokenizer.json or a SentencePiece .model.\n";

const char* kDecodeUsage =
    "usage: moe tokenizer decode --tokenizer T < ids > text\n"
    "\n"
    "Decodes each line of space-separated token ids on stdin and prints the text followed by a\n"
    "newline, so decode(encode(text)) == text for text that ends with a newline.\n";

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double round3(double x) { return std::round(x * 1000) / 1000; }

PreTokenizer parse_pre_tokenizer(const std::string& s) {
  if (s == "gpt2") return {SplitPattern::Gpt2, false};
  if (s == "llama3") return {SplitPattern::Llama3, false};
  if (s == "gpt2-digits") return {SplitPattern::Gpt2, true};
  throw error("--pre-tokenizer ", s, ": unknown (expected gpt2, llama3 or gpt2-digits)");
}

// Counts the pieces of the whole corpus, reading it in bounded batches. A long .txt document
// comes in pieces; each is counted up to its last safe cut and the rest carried into the next, so
// the counts equal those of the whole document.
PieceCounts count_corpus(const std::vector<CorpusFile>& files, const std::string& text_key, const PreTokenizer& pre) {
  constexpr size_t kBatchBytes = size_t(64) << 20, kPieceBytes = size_t(16) << 20;
  DocumentReader reader(files, text_key, kPieceBytes);
  PieceCounts counts;
  std::vector<Document> batch;
  std::vector<std::string> texts;
  std::string carry;
  while (reader.next_batch(kBatchBytes, batch)) {
    texts.clear();
    for (Document& d : batch) {
      std::string text = carry.empty() ? std::move(d.text) : carry + d.text;
      size_t cut = d.last ? text.size() : last_safe_cut(text);
      carry = text.substr(cut);
      text.resize(cut);
      texts.push_back(std::move(text));
    }
    count_pieces(std::vector<std::string_view>(texts.begin(), texts.end()), pre, counts);
  }
  return counts;
}

int train(int argc, char** argv) {
  Args a(argc, argv, {"input...", "vocab-size", "output", "pre-tokenizer", "special...", "text-key", "workers"}, {});
  if (a.help()) return std::fputs(kTrainUsage, stdout), 0;
  std::vector<std::string> inputs = a.all("input");
  if (inputs.empty()) throw error("missing required flag --input (see --help)");
  for (const auto& p : a.positional()) inputs.push_back(p);  // --input corpus/*.txt
  const long long vocab_size = a.get_int("vocab-size", -1);
  if (!a.has("vocab-size")) throw error("missing required flag --vocab-size (see --help)");
  const std::string output = a.required("output");
  if (!output.ends_with(".json"))
    throw error("--output ", output, ": expected a file name ending in .json (that is how --tokenizer recognises it)");
  const PreTokenizer pre = parse_pre_tokenizer(a.get("pre-tokenizer", "gpt2"));
  std::vector<std::string> specials = {"<|endoftext|>"};
  for (const auto& s : a.all("special")) specials.push_back(s);
  const std::string text_key = a.get("text-key", "text");
  const long long workers = a.get_int("workers", 0);
  if (workers < 0 || workers > 4096) throw error("--workers ", workers, ": out of range (expected 0 = all cores, or 1..4096)");
  if (vocab_size < int64_t(specials.size()) + 256 || vocab_size > (int64_t(1) << 31))
    throw error("--vocab-size ", vocab_size, ": out of range (expected ", specials.size() + 256,
                " (special tokens + 256 bytes) to 2^31)");
  auto files = list_corpus(inputs);
  set_num_threads(int(workers));

  auto start = Clock::now();
  PieceCounts counts = count_corpus(files, text_key, pre);
  if (counts.empty()) throw error(inputs[0], ": corpus is empty (expected some text to train on)");
  const double count_s = seconds_since(start);
  BpeVocab vocab = learn_bpe(counts, vocab_size, specials);
  const double learn_s = seconds_since(start) - count_s;
  const std::string text = tokenizer_json(vocab, pre).dump(2) + "\n";

  fs::path out(output);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  const std::string tmp = output + ".tmp-" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw error(output, ": cannot write (", std::strerror(errno), ")");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), output.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw error(output, ": write failed (", why, ")");
  }

  uint64_t bytes = 0;
  for (const auto& file : files) bytes += file.bytes;
  if (int64_t(vocab.tokens.size()) < vocab_size)
    std::fprintf(stderr, "note: the corpus ran out of pairs to merge: vocabulary %zu < --vocab-size %lld\n",
                 vocab.tokens.size(), vocab_size);
  nlohmann::ordered_json s = {{"output", output},
                              {"vocab_size", vocab.tokens.size()},
                              {"merges", vocab.merges.size()},
                              {"distinct_pieces", counts.size()},
                              {"bytes", bytes},
                              {"count_seconds", round3(count_s)},
                              {"merge_seconds", round3(learn_s)},
                              {"seconds", round3(seconds_since(start))}};
  std::printf("%s\n", s.dump().c_str());
  return 0;
}

// Calls f(line, number) for each line of stdin, without its '\n'.
template <class F>
void for_each_line(F&& f) {
  char* buf = nullptr;
  size_t cap = 0;
  int64_t number = 0;
  ssize_t n;
  try {
    while ((n = getline(&buf, &cap, stdin)) >= 0) {
      std::string_view line(buf, size_t(n));
      if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
      f(line, ++number);
    }
  } catch (...) {
    std::free(buf);
    throw;
  }
  std::free(buf);
}

int encode(int argc, char** argv) {
  Args a(argc, argv, {"tokenizer"}, {});
  if (a.help()) return std::fputs(kEncodeUsage, stdout), 0;
  auto tok = make_tokenizer(a.required("tokenizer"));
  std::string out;
  for_each_line([&](std::string_view line, int64_t) {
    out.clear();
    char num[16];
    for (uint32_t id : tok->encode(line)) {
      if (!out.empty()) out += ' ';
      out.append(num, std::to_chars(num, num + sizeof num, id).ptr);
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
  return 0;
}

int decode(int argc, char** argv) {
  Args a(argc, argv, {"tokenizer"}, {});
  if (a.help()) return std::fputs(kDecodeUsage, stdout), 0;
  auto tok = make_tokenizer(a.required("tokenizer"));
  std::vector<uint32_t> ids;
  for_each_line([&](std::string_view line, int64_t number) {
    ids.clear();
    for (size_t i = 0; i < line.size();) {
      if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
        ++i;
        continue;
      }
      uint32_t id = 0;
      auto [end, ec] = std::from_chars(line.data() + i, line.data() + line.size(), id);
      size_t stop = line.find_first_of(" \t\r", i);
      std::string_view word = line.substr(i, stop == std::string_view::npos ? std::string_view::npos : stop - i);
      if (ec != std::errc() || end != word.data() + word.size())
        throw error("<stdin>:", number, ": '", word, "' is not a token id (expected non-negative integers separated by spaces)");
      ids.push_back(id);
      i += word.size();
    }
    std::string text;
    try {
      text = tok->decode(ids);
    } catch (const Error& e) {
      throw error("<stdin>:", number, ": ", e.what());
    }
    text += '\n';
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
  return 0;
}

}  // namespace

int cmd_tokenizer(int argc, char** argv) {
  std::string sub = argc > 0 ? argv[0] : "";
  if (sub == "train") return train(argc - 1, argv + 1);
  if (sub == "encode") return encode(argc - 1, argv + 1);
  if (sub == "decode") return decode(argc - 1, argv + 1);
  if (sub == "--help" || sub == "-h" || sub == "help") return std::fputs(kUsage, stdout), 0;
  if (sub.empty()) return std::fputs(kUsage, stderr), 2;
  throw error("unknown tokenizer command '", sub, "' (expected train, encode or decode; see moe tokenizer --help)");
}

}  // namespace moe
