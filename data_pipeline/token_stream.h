// The tokenised corpus as one stream of tokens, written so that a killed preprocess can go on from
// its last checkpoint (docs/formats.md, "Resuming"). Under `dir` (the run's .tmp folder):
//   Shards format:   train/shard-NNNNN.bin, S tokens each: written as .bin.tmp, synced and renamed
//                    when full, so a .bin name always holds a complete shard
//   Megatron format: train/data_text_document.bin, one growing file
//   both:            doc-starts.u64, the stream offset (little-endian uint64) of every document's
//                    first token
// Every S tokens (S = shard_tokens) the data is synced and on_checkpoint() runs; a crash after it
// loses nothing before that point, and a resumed TokenStream cuts the files back to it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data_pipeline/out_file.h"

namespace moe {

enum class OutputFormat { Shards, Megatron };

// What the checkpoints made durable (recorded in the progress file).
struct StreamState {
  int64_t tokens = 0;
  int64_t doc_starts = 0;
  // Of each complete stream shard (Shards format); "" for the last, shorter one (finishing hashes it).
  std::vector<std::string> shard_sha256;
};

// "shard-00007.bin" for (7, ".bin").
std::string shard_name(int64_t k, const char* ext);
// The Megatron pair's base name in each split folder (Megatron-LM's own preprocess_data.py default
// for --json-keys text: <prefix>_text_document).
inline constexpr const char* kMegatronName = "data_text_document";

class TokenStream {
 public:
  // Called after each checkpoint with the durable state and how many tokens of the unit being
  // appended (counting its `unit_done`) are in it.
  using Checkpoint = std::function<void(const StreamState&, int64_t unit_tokens)>;

  // Continues the stream from `from` (a fresh one from {}); `width` is 2 or 4 bytes per token.
  TokenStream(std::string dir, OutputFormat format, int width, int64_t shard_tokens, StreamState from,
              Checkpoint on_checkpoint);
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;

  // Appends the tokens of one unit (a document or a piece of one). doc_start: ids[0] starts a
  // document. unit_done: tokens of this unit already in the stream (a resumed unit).
  void append(const uint32_t* ids, size_t n, bool doc_start, int64_t unit_done);
  // The end of the input: makes all of it durable (the last, shorter shard too).
  StreamState finish();
  int64_t tokens() const { return state_.tokens + pending_; }

 private:
  void checkpoint(int64_t unit_tokens, bool hash);
  std::string shard_path(int64_t k, bool tmp) const;

  std::string dir_;
  OutputFormat format_;
  int width_;
  int64_t S_;
  Checkpoint on_checkpoint_;
  StreamState state_;    // as of the last checkpoint
  int64_t pending_ = 0;  // tokens written since
  int64_t starts_pending_ = 0;
  OutFile data_, starts_;
  std::vector<uint8_t> buf_;
};

// Reads doc-starts.u64 front to back, handing out the document pieces of consecutive token ranges.
class DocStarts {
 public:
  DocStarts(const std::string& path, int64_t count);
  ~DocStarts();
  DocStarts(const DocStarts&) = delete;
  DocStarts& operator=(const DocStarts&) = delete;
  // Calls fn(begin, end) for each piece of [lo, hi) in order: a piece starts at lo or at a document
  // start inside the range and runs to the next start or hi. Ranges must come in increasing order.
  void pieces(int64_t lo, int64_t hi, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void advance();
  std::string path_;
  FILE* f_;
  int64_t left_;
  bool has_ = false;
  int64_t next_ = 0;
};

}  // namespace moe
