// moe preprocess: raw text -> token stream -> train/val shard folders (docs/formats.md).
//
// Documents are read in input order in batches of ~kBatchBytes, tokenised in parallel (one task per
// document, results kept in document order, so the bytes written never depend on --workers), and
// appended to one stream. The val split is the stream's tail, cut when the total is known. All of
// it is written under `<output>.tmp-<pid>` and renamed into place at the end, so an interrupted run
// never leaves a half-written output folder.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>

#include "data_pipeline/corpus.h"
#include "data_pipeline/shard_writer.h"
#include "data_pipeline/shards.h"
#include "data_pipeline/tokenizer.h"
#include "framework/error.h"
#include "framework/threads.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

// Text per batch: bounds memory (the ids take 4 bytes per token) while giving every worker work.
constexpr size_t kBatchBytes = size_t(16) << 20;
// Long .txt documents are read in pieces of this size when the tokenizer allows it.
constexpr size_t kPieceBytes = size_t(1) << 20;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A progress line on stderr, only once a run has taken a while (small inputs stay quiet). On a
// terminal it rewrites itself every second; in a log it adds a line every 10 seconds.
class Progress {
 public:
  explicit Progress(uint64_t total_bytes) : total_(total_bytes), tty_(isatty(fileno(stderr))) {}
  void update(uint64_t bytes) {
    double t = seconds_since(start_);
    if (t < 2.0 || t - last_ < (tty_ ? 1.0 : 10.0)) return;
    last_ = t;
    shown_ = true;
    std::fprintf(stderr, "%spreprocess: %.1f / %.1f MB (%.0f%%), %.1f MB/s%s", tty_ ? "\r" : "", bytes / 1e6,
                 total_ / 1e6, total_ ? 100.0 * double(bytes) / double(total_) : 100.0, bytes / 1e6 / t,
                 tty_ ? "   " : "\n");
  }
  void note(const char* what) {
    if (shown_) std::fprintf(stderr, "%spreprocess: %s\n", tty_ ? "\n" : "", what), tty_ = false;
  }

 private:
  Clock::time_point start_ = Clock::now();
  uint64_t total_;
  bool tty_, shown_ = false;
  double last_ = -1e9;  // so the first line comes at 2 s
};

// Strips trailing slashes so that "data/x/" gives the sibling "data/x.tmp-N", not "data/x/.tmp-N".
fs::path clean_output(const std::string& s) {
  fs::path p = fs::path(s).lexically_normal();
  if (p.filename().empty() && p.has_parent_path()) p = p.parent_path();
  return p;
}

// Replacing a folder is only safe when it is an earlier preprocess output (or empty): a mistyped
// --output . --overwrite must not delete the user's work.
void check_replaceable(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  if (!overwrite) throw error(out.string(), ": already exists (pass --overwrite to replace it)");
  if (!fs::is_directory(out)) throw error(out.string(), ": exists and is not a folder (expected a preprocess output folder)");
  if (!fs::exists(out / "train" / "manifest.json") && !fs::is_empty(out))
    throw error(out.string(), ": exists and is not the output of moe preprocess (no train/manifest.json); refusing to replace it");
}

struct Counts {
  int64_t documents = 0, empty = 0;
};

void tokenize_corpus(const Tokenizer& tok, DocumentReader& reader, ShardWriter& writer, Progress& progress,
                     Counts& counts) {
  std::vector<Document> batch;  // documents or pieces of them, in order
  std::vector<std::vector<uint32_t>> ids;
  std::vector<int64_t> eos_at;  // position of an EOS id inside a piece, -1 when none
  std::vector<std::exception_ptr> errors;
  const uint32_t eos = tok.eos_id();
  int64_t doc_tokens = 0;  // of the current document so far
  while (reader.next_batch(kBatchBytes, batch)) {
    const int64_t n = int64_t(batch.size());
    ids.assign(size_t(n), {});
    eos_at.assign(size_t(n), -1);
    errors.assign(size_t(n), nullptr);
    // Pool threads must not throw: errors come back by value and are raised in document order.
    parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        try {
          ids[i] = tok.encode(batch[i].text);
          auto it = std::find(ids[i].begin(), ids[i].end(), eos);
          if (it != ids[i].end()) eos_at[i] = it - ids[i].begin();
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    });
    for (int64_t i = 0; i < n; ++i) {
      if (errors[i]) std::rethrow_exception(errors[i]);
      if (eos_at[i] >= 0)
        throw error(reader.where(batch[i]), ": token ", doc_tokens + eos_at[i], " is the end-of-document id ", eos,
                    " (a NUL byte for the byte tokenizer; expected text without it)");
      writer.add_tokens(ids[i]);
      doc_tokens += int64_t(ids[i].size());
      if (!batch[i].last) continue;
      ++counts.documents;
      if (doc_tokens == 0)
        ++counts.empty;  // an empty document would only add a lone EOS
      else
        writer.end_document();
      doc_tokens = 0;
    }
    progress.update(reader.bytes_read());
  }
}

nlohmann::json run(const PreprocessOptions& opt, const fs::path& out, const fs::path& tmp) {
  auto start = Clock::now();
  auto tok = make_tokenizer(opt.tokenizer);
  auto files = list_corpus(opt.inputs);
  uint64_t bytes = 0;
  for (const auto& f : files) bytes += f.bytes;
  set_num_threads(opt.workers);

  fs::remove_all(tmp);  // ours by name: only a dead run with our pid can have left it
  fs::create_directories(tmp);
  ShardWriter writer(tmp.string(), {tok->name(), tok->hash(), tok->vocab_size(), tok->eos_id()}, opt.shard_tokens);
  DocumentReader reader(files, opt.text_key, tok->encodes_piecewise() ? kPieceBytes : 0);
  Progress progress(bytes);
  Counts counts;
  tokenize_corpus(*tok, reader, writer, progress, counts);

  std::string inputs;
  for (const auto& in : opt.inputs) inputs += (inputs.empty() ? "" : " ") + in;
  if (writer.tokens() == 0)
    throw error(inputs, ": corpus is empty (", counts.documents, " documents, all empty; expected some text)");
  // Every document is at least 2 tokens (text + EOS) and F <= 0.5, so train keeps at least one.
  const int64_t total = writer.tokens();
  const int64_t val = opt.val_fraction > 0 ? std::max<int64_t>(1, int64_t(std::ceil(opt.val_fraction * double(total)))) : 0;
  progress.note("writing indexes and checksums");
  auto [train_m, val_m] = writer.finish(val);

  if (fs::exists(out)) {  // checked before starting; it may have appeared while we worked
    check_replaceable(out, opt.overwrite);
    fs::path old = out.string() + ".old-" + std::to_string(getpid());
    fs::rename(out, old);
    fs::rename(tmp, out);
    fs::remove_all(old);
  } else {
    fs::rename(tmp, out);
  }

  double secs = seconds_since(start);
  nlohmann::json s;
  s["output"] = out.string();
  s["tokenizer"] = tok->name();
  s["files"] = files.size();
  s["documents"] = counts.documents;
  s["empty_documents"] = counts.empty;
  s["bytes"] = bytes;
  s["train_tokens"] = train_m["tokens"];
  s["val_tokens"] = val_m["tokens"];
  s["train_shards"] = train_m["shards"].size();
  s["val_shards"] = val_m["shards"].size();
  s["seconds"] = std::round(secs * 1000) / 1000;
  s["mb_per_s"] = std::round(bytes / 1e6 / std::max(secs, 1e-9) * 10) / 10;
  return s;
}

}  // namespace

nlohmann::json preprocess(const PreprocessOptions& opt) {
  if (opt.output.empty()) throw error("preprocess: no output folder given (expected --output DIR)");
  if (!(opt.val_fraction >= 0 && opt.val_fraction <= 0.5))
    throw error("--val-fraction ", opt.val_fraction, ": out of range (expected 0 <= F <= 0.5)");
  if (opt.workers < 0) throw error("--workers ", opt.workers, ": negative (expected 0 = all cores, or a count)");
  if (opt.shard_tokens < 1) throw error("--shard-tokens ", opt.shard_tokens, ": expected at least 1");
  if (opt.text_key.empty()) throw error("--text-key: empty (expected the JSON field holding the text)");

  const fs::path out = clean_output(opt.output);
  check_replaceable(out, opt.overwrite);
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(getpid());
  try {
    return run(opt, out, tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    try {
      throw;
    } catch (const fs::filesystem_error& e) {  // permissions, full disk: the user's to fix
      throw error(e.path1().empty() ? out.string() : e.path1().string(), ": ", e.code().message());
    }
  }
}

}  // namespace moe
