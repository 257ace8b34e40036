// moe preprocess: raw text -> token stream -> train/val split folders (docs/formats.md).
//
// Documents are read in input order in batches of ~kBatchBytes, parsed and tokenised in parallel
// (results kept in document order, so the bytes written never depend on --workers), and appended
// to one stream (token_stream.h) by a thread of its own while the next batch is tokenised.
// Everything is written under `<output>.tmp`; every shard's worth of tokens is a checkpoint
// recorded in `<output>.tmp/progress.json` (the durable stream length and the input position to go
// on from), so a run that is killed continues, when started again with the same arguments, from
// its last checkpoint and writes the same bytes as an uninterrupted run. When the input is done,
// the stream's tail becomes the val split (shard_writer.h, megatron.h) and the folder is renamed
// to `<output>`.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include "data_pipeline/corpus.h"
#include "data_pipeline/jsonl.h"
#include "data_pipeline/megatron.h"
#include "data_pipeline/preprocess_state.h"
#include "data_pipeline/progress_line.h"
#include "data_pipeline/shard_writer.h"
#include "data_pipeline/shards.h"
#include "data_pipeline/token_stream.h"
#include "data_pipeline/tokenizer.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "framework/sha256.h"
#include "framework/threads.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace moe {
namespace {

// Text per batch: bounds memory (ids take 4 bytes per token) while giving every worker work.
constexpr size_t kBatchBytes = size_t(16) << 20;
// Long text documents are tokenised in pieces of about this size (corpus.h).
constexpr size_t kPieceBytes = size_t(1) << 20;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Strips trailing slashes so that "data/x/" gives the sibling "data/x.tmp", not "data/x/.tmp".
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

// The result of parsing and tokenising one unit (a worker's output).
struct Unit {
  std::vector<uint32_t> ids;
  int64_t eos_at = -1;  // position of an EOS id among ids, -1 when none
  uint64_t invalid = 0, text_bytes = 0;
  bool bad = false;  // a .jsonl line to report or skip; `why` says what is wrong
  std::string why;
  std::exception_ptr err;
};

class Preprocessor {
 public:
  Preprocessor(const PreprocessOptions& opt, fs::path out)
      : opt_(opt), out_(std::move(out)), tmp_(out_.string() + ".tmp"),
        megatron_(opt.format == "megatron") {}

  json run() {
    const auto start = Clock::now();
    tok_ = make_tokenizer(opt_.tokenizer);
    files_ = list_corpus(opt_.inputs);
    for (const auto& f : files_) input_bytes_ += f.bytes;
    header_ = {tok_->name(), tok_->hash(), tok_->vocab_size(), tok_->eos_id(), choose_width()};
    set_num_threads(opt_.workers);
    progress_ = std::make_unique<ProgressLine>("preprocess", input_bytes_, opt_.progress_seconds);

    // A run killed right after renaming <output>.tmp to <output> left its progress.json there.
    std::optional<RunState> s = load_state(out_ / "progress.json");
    if (s && s->fingerprint == fingerprint() && s->val.is_object()) {
      state_ = std::move(*s);
      fs::remove(out_ / "doc-starts.u64");
      fs::remove(out_ / "progress.json");
      progress_->note(out_.string() + " was complete but for removing its progress.json; done now");
      return summary(read_json(out_ / "train" / "manifest.json"), read_json(out_ / "val" / "manifest.json"),
                     seconds_since(start));
    }
    check_replaceable(out_, opt_.overwrite);
    open_run_folder();
    try {
      if (!state_.input_done) tokenize();
      auto [train_m, val_m] = finish();
      publish();
      return summary(train_m, val_m, seconds_since(start));
    } catch (...) {
      // A run that reached a checkpoint keeps its folder (a full disk, a bad line further on:
      // fix it and run again); one that did not leaves nothing behind.
      progress_.reset();
      const bool keep = state_.stream.tokens > 0;
      if (!keep) {
        lock_.reset();
        std::error_code ec;
        fs::remove_all(tmp_, ec);
      }
      const std::string kept = keep ? " (the finished part is kept in " + tmp_.string() +
                                          "; run the same command again to resume)"
                                    : "";
      try {
        throw;
      } catch (const fs::filesystem_error& e) {
        throw error(e.path1().empty() ? tmp_.string() : e.path1().string(), ": ", e.code().message(), kept);
      } catch (const Error& e) {
        throw Error(e.what() + kept);
      }
    }
  }

 private:
  int choose_width() const {
    const int64_t vocab = tok_->vocab_size();
    const int width = opt_.dtype == "u16" ? 2 : opt_.dtype == "u32" ? 4 : token_width(vocab);
    const int64_t limit = width == 2 ? int64_t(1) << 16 : megatron_ ? int64_t(1) << 31 : int64_t(1) << 32;
    if (vocab > limit)
      throw error(tok_->name(), ": a vocabulary of ", vocab, " ids does not fit ",
                  width == 2 ? "u16" : megatron_ ? "i32" : "u32", " tokens (expected at most ", limit, " ids",
                  width == 2 ? "; use --dtype u32 or auto)" : ")");
    return width;
  }

  // Everything that decides the output bytes; a resumed run must match it exactly.
  std::string fingerprint() const {
    json files = json::array();
    for (const auto& f : files_) files.push_back({f.path, f.bytes, f.mtime_ns});
    json j = {{"version", kStateVersion},     {"tokenizer", header_.tokenizer},   {"tokenizer_hash", header_.tokenizer_hash},
              {"text_key", opt_.text_key},    {"split_docs", opt_.split_docs},    {"skip_bad_lines", opt_.skip_bad_lines},
              {"val_fraction", opt_.val_fraction}, {"shard_tokens", opt_.shard_tokens}, {"format", opt_.format},
              {"width", header_.width},       {"files", files}};
    return sha256_hex(j.dump());
  }

  static nlohmann::ordered_json read_json(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    check_json_depth(text.str(), path.string(), "progress.json as preprocess writes it");
    return nlohmann::ordered_json::parse(text.str());
  }

  // A progress.json, or nothing when it is missing or unreadable (then it is not ours to resume).
  static std::optional<RunState> load_state(const fs::path& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return std::nullopt;
    try {
      return RunState::from_json(read_json(path));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  void save_state() { write_file_atomic((tmp_ / "progress.json").string(), state_.to_json().dump() + "\n"); }

  // Tests: fail after the n-th durable checkpoint (the end of the input and the val split count as
  // one each), as a kill would: a stream checkpoint's shard is then recorded but not yet renamed.
  void crash_point() {
    if (++checkpoints_ == opt_.crash_after_checkpoints)
      throw error("preprocess: stopped after ", checkpoints_, " checkpoints (crash_after_checkpoints)");
  }

  // An empty folder, or one a run killed while writing its first progress.json left behind
  // (nothing but progress.json.tmp): ours to start in.
  static bool only_first_progress_write(const fs::path& dir) {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename() != "progress.json.tmp") return false;
    return true;
  }

  // Creates or reopens <output>.tmp: resumes when its progress.json has our fingerprint, else
  // starts over in it.
  void open_run_folder() {
    fs::create_directories(tmp_);
    lock_ = std::make_unique<FolderLock>(tmp_);
    const std::string fp = fingerprint();
    const fs::path saved = tmp_ / "progress.json";
    std::error_code ec;
    if (fs::exists(saved, ec)) {
      if (std::optional<RunState> s = load_state(saved); s && s->fingerprint == fp) {
        state_ = std::move(*s);
        if (!megatron_) settle_recorded_shards(tmp_.string(), state_.stream);
        if (state_.stream.tokens > 0) {
          resumed_tokens_ = state_.stream.tokens;
          progress_->note("resuming " + tmp_.string() + " from its last checkpoint (" +
                          std::to_string(state_.stream.tokens) + " tokens" +
                          (state_.input_done ? ", input done)" : ")"));
        }
        return;
      }
      progress_->note(tmp_.string() + " holds an interrupted run with other arguments or inputs; starting over");
    } else if (!only_first_progress_write(tmp_)) {
      throw error(tmp_.string(), ": exists and was not made by moe preprocess (no progress.json); refusing to delete it");
    }
    for (const auto& e : fs::directory_iterator(tmp_)) fs::remove_all(e.path());
    state_ = RunState{};
    state_.fingerprint = fp;
    save_state();
  }

  // Parses and tokenises a batch, one unit per task; workers take the next unit as they finish
  // (units differ widely in size). Pool threads must not throw: errors come back by value.
  void encode_batch(std::vector<Document>& batch, std::vector<Unit>& units) {
    const int64_t n = int64_t(batch.size());
    units.assign(size_t(n), Unit{});
    const uint32_t eos = tok_->eos_id();
    std::atomic<int64_t> next{0};
    parallel_for(num_threads(), [&](int64_t, int64_t) {
      std::string parsed;
      for (int64_t i; (i = next.fetch_add(1)) < n;) {
        Document& d = batch[size_t(i)];
        Unit& u = units[size_t(i)];
        try {
          std::string_view text = d.text;
          if (d.oversized) {
            u.bad = true;
            u.why = "line longer than 64 MiB (expected one document per line)";
            continue;
          }
          if (d.json) {
            std::string why;
            JsonlStatus s = jsonl_field(d.text, opt_.text_key, parsed, why);
            if (s != JsonlStatus::Ok) {
              u.bad = true;
              u.why = jsonl_problem(s, why, opt_.text_key);
              continue;
            }
            text = parsed;
          }
          u.ids = d.at.mid_doc ? tok_->encode_continuation(text) : tok_->encode(text);
          u.text_bytes = text.size();
          u.invalid = count_invalid_utf8(text);
          auto it = std::find(u.ids.begin(), u.ids.end(), eos);
          if (it != u.ids.end()) u.eos_at = it - u.ids.begin();
        } catch (...) {
          u.err = std::current_exception();
        }
      }
    });
  }

  // A batch on its way through: read and encoded on the main thread (and the pool), then appended.
  struct Batch {
    std::vector<Document> docs;
    std::vector<Unit> units;
    uint64_t bytes_read = 0;  // input consumed by the end of the batch, for the progress line
  };

  // The serial part: the units of a batch in input order (errors in order, counts, the stream and
  // its checkpoints). Runs on a thread of its own while the next batch is read and encoded, so
  // the cores stay busy with --workers tokenising.
  void append_batch(Batch& b, TokenStream& stream, const DocumentReader& reader) {
    Counts& c = state_.counts;
    const uint32_t eos = tok_->eos_id();
    for (size_t i = 0; i < b.docs.size(); ++i) {
      const Document& d = b.docs[i];
      Unit& u = b.units[i];
      if (u.err) std::rethrow_exception(u.err);
      if (u.bad) {
        if (!opt_.skip_bad_lines) throw error(reader.where(d), ": ", u.why);
        ++c.bad_lines;
        if (c.first_bad.empty()) c.first_bad = reader.where(d) + ": " + u.why;
        continue;
      }
      if (u.eos_at >= 0)
        throw error(reader.where(d), ": token ", c.doc_tokens + u.eos_at, " is the end-of-document id ", eos,
                    " (a NUL byte for the byte tokenizer; expected text without it)");
      const int64_t text_tokens = int64_t(u.ids.size());
      if (d.last && c.doc_tokens + text_tokens > 0) u.ids.push_back(eos);
      // A resumed run re-reads the unit it stopped in; its first `skip_` tokens are in the stream.
      const size_t drop = size_t(std::min<int64_t>(skip_, int64_t(u.ids.size())));
      skip_ -= int64_t(drop);
      unit_ = &d;
      stream.append(u.ids.data() + drop, u.ids.size() - drop, c.doc_tokens == 0 && text_tokens > 0 && drop == 0,
                    int64_t(drop));
      c.doc_tokens += text_tokens;
      c.text_bytes += u.text_bytes;
      c.invalid_bytes += u.invalid;
      c.doc_invalid = c.doc_invalid || u.invalid > 0;
      if (d.last) {
        ++c.documents;
        if (c.doc_tokens == 0) ++c.empty;  // an empty document would only add a lone EOS
        if (c.doc_invalid) ++c.invalid_docs;
        c.doc_tokens = 0;
        c.doc_invalid = false;
      }
      std::vector<uint32_t>().swap(u.ids);
    }
    progress_->update(b.bytes_read, stream.tokens() - tokens_before_);
  }

  void tokenize() {
    ReaderOptions ro;
    ro.text_key = opt_.text_key;
    ro.piece_bytes = kPieceBytes;
    ro.cuts = tok_->cut_rule();
    ro.split_docs = opt_.split_docs;
    ro.raw_jsonl = true;
    DocumentReader reader(files_, ro, state_.at);
    skip_ = state_.skip;
    TokenStream stream(tmp_.string(), megatron_ ? OutputFormat::Megatron : OutputFormat::Shards, header_.width,
                       opt_.shard_tokens, state_.stream, [&](const StreamState& s, int64_t unit_tokens) {
                         state_.stream = s;
                         state_.at = unit_->at;
                         state_.skip = unit_tokens;
                         save_state();
                         crash_point();
                       });
    tokens_before_ = stream.tokens();
    Batch batches[2];
    Batch *cur = &batches[0], *prev = &batches[1];
    std::future<void> appending;  // of *prev; declared after `stream`, so it ends before it
    auto wait_append = [&] {
      if (appending.valid()) appending.get();  // rethrows its error
    };
    for (bool first = true;; first = false) {
      bool more = false;
      try {
        more = reader.next_batch(kBatchBytes, cur->docs);
      } catch (...) {
        wait_append();  // an error earlier in the input is the one to report
        throw;
      }
      if (!more) break;
      if (first) {  // the reader has found its start position now
        start_bytes_ = reader.start_bytes();
        progress_->set_start(start_bytes_);
      }
      encode_batch(cur->docs, cur->units);
      cur->bytes_read = reader.bytes_read();
      wait_append();
      appending = std::async(std::launch::async, [this, cur, &stream, &reader] { append_batch(*cur, stream, reader); });
      std::swap(cur, prev);
    }
    wait_append();
    stream.finish([&](const StreamState& s) {
      state_.stream = s;
      state_.input_done = true;
      state_.skip = 0;
      save_state();
      crash_point();
    });
  }

  std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish() {
    const int64_t total = state_.stream.tokens;
    if (total == 0) {
      std::string inputs;
      for (const auto& in : opt_.inputs) inputs += (inputs.empty() ? "" : " ") + in;
      throw error(inputs, ": corpus is empty (", state_.counts.documents, " documents, all empty; expected some text)");
    }
    // Every document is at least 2 tokens (text + EOS) and F <= 0.5, so train keeps at least one.
    const int64_t val =
        opt_.val_fraction > 0 ? std::max<int64_t>(1, int64_t(std::ceil(opt_.val_fraction * double(total)))) : 0;
    const uint32_t eos = tok_->eos_id();
    FinishInput in;
    in.dir = tmp_.string();
    in.header = header_;
    in.shard_tokens = opt_.shard_tokens;
    in.stream = state_.stream;
    in.cut = total - val;
    in.text_bytes = state_.counts.text_bytes;
    // Document by document: SentencePiece drops its dummy-prefix space at the start of a text only.
    in.bytes_of = [&](const uint32_t* ids, size_t n) {
      uint64_t bytes = 0;
      for (size_t b = 0; b < n;) {
        const size_t e = size_t(std::find(ids + b, ids + n, eos) - ids);
        if (e > b) bytes += tok_->decode(std::vector<uint32_t>(ids + b, ids + e)).size();
        b = e + 1;
      }
      return bytes;
    };
    in.val_record = state_.val.is_null() ? nullptr : &state_.val;
    in.save_val = [&](const json& rec) {
      state_.val = rec;
      save_state();
      crash_point();
    };
    return megatron_ ? finish_megatron(in) : finish_shards(in);
  }

  // <output>.tmp -> <output>, replacing an earlier output when --overwrite allows it. The run's
  // bookkeeping (progress.json, doc-starts.u64) goes only after the rename: a run killed before it
  // resumes from the folder as it was, one killed after it finds <output> complete (run()).
  void publish() {
    if (fs::exists(out_)) {  // checked before starting; it may have appeared while we worked
      check_replaceable(out_, opt_.overwrite);
      fs::path old = out_.string() + ".old-" + std::to_string(getpid());
      rename_path(out_.string(), old.string());
      rename_path(tmp_.string(), out_.string());
      fs::remove_all(old);
    } else {
      rename_path(tmp_.string(), out_.string());
    }
    fs::remove(out_ / "doc-starts.u64");
    fs::remove(out_ / "progress.json");
    lock_.reset();
  }

  json summary(const nlohmann::ordered_json& train_m, const nlohmann::ordered_json& val_m, double secs) {
    const Counts& c = state_.counts;
    if (c.bad_lines > 0)
      progress_->note("skipped " + std::to_string(c.bad_lines) + " malformed line(s); the first: " + c.first_bad);
    if (c.invalid_docs > 0)
      progress_->note(std::to_string(c.invalid_docs) + " document(s) hold invalid UTF-8 (" +
                      std::to_string(c.invalid_bytes) + " bytes), kept as bytes");
    json s;
    s["output"] = out_.string();
    s["tokenizer"] = tok_->name();
    s["format"] = opt_.format;
    s["files"] = files_.size();
    s["documents"] = c.documents;
    s["empty_documents"] = c.empty;
    s["bad_lines"] = c.bad_lines;
    if (!c.first_bad.empty()) s["first_bad_line"] = c.first_bad;
    s["invalid_utf8_documents"] = c.invalid_docs;
    s["invalid_utf8_bytes"] = c.invalid_bytes;
    s["bytes"] = input_bytes_;
    s["text_bytes"] = c.text_bytes;
    s["train_tokens"] = train_m["tokens"];
    s["val_tokens"] = val_m["tokens"];
    s["train_shards"] = train_m["shards"].size();
    s["val_shards"] = val_m["shards"].size();
    s["resumed_from_tokens"] = resumed_tokens_;
    s["seconds"] = std::round(secs * 1000) / 1000;
    s["mb_per_s"] = std::round(double(input_bytes_ - start_bytes_) / 1e6 / std::max(secs, 1e-9) * 10) / 10;
    return s;
  }

  const PreprocessOptions& opt_;
  const fs::path out_, tmp_;
  const bool megatron_;
  std::unique_ptr<Tokenizer> tok_;
  std::vector<CorpusFile> files_;
  uint64_t input_bytes_ = 0;
  ShardHeader header_;
  std::unique_ptr<ProgressLine> progress_;
  std::unique_ptr<FolderLock> lock_;
  RunState state_;
  int64_t resumed_tokens_ = 0;
  int64_t checkpoints_ = 0;
  int64_t skip_ = 0;                // tokens of the next unit already in the stream (a resumed run)
  const Document* unit_ = nullptr;  // being appended, for the checkpoint callback
  int64_t tokens_before_ = 0;       // in the stream when this run started
  uint64_t start_bytes_ = 0;  // input bytes a resumed run did not have to read
};

}  // namespace

json preprocess(const PreprocessOptions& opt) {
  if (opt.output.empty()) throw error("preprocess: no output folder given (expected --output DIR)");
  if (!(opt.val_fraction >= 0 && opt.val_fraction <= 0.5))
    throw error("--val-fraction ", opt.val_fraction, ": out of range (expected 0 <= F <= 0.5)");
  if (opt.workers < 0) throw error("--workers ", opt.workers, ": negative (expected 0 = all cores, or a count)");
  if (opt.shard_tokens < 1) throw error("--shard-tokens ", opt.shard_tokens, ": expected at least 1");
  if (opt.text_key.empty()) throw error("--text-key: empty (expected the JSON field holding the text)");
  if (opt.format != "shards" && opt.format != "megatron")
    throw error("--format ", opt.format, ": unknown (expected shards or megatron)");
  if (opt.dtype != "auto" && opt.dtype != "u16" && opt.dtype != "u32")
    throw error("--dtype ", opt.dtype, ": unknown (expected auto, u16 or u32)");

  const fs::path out = clean_output(opt.output);
  std::error_code ec;
  if (!fs::exists(out / "progress.json", ec)) check_replaceable(out, opt.overwrite);  // else: see run()
  try {
    return Preprocessor(opt, out).run();
  } catch (const fs::filesystem_error& e) {  // permissions, full disk: the user's to fix
    throw error(e.path1().empty() ? out.string() : e.path1().string(), ": ", e.code().message());
  }
}

}  // namespace moe
