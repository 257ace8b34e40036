// The tokenised corpus as one stream of tokens, written so that a killed preprocess can go on from
// its last checkpoint (docs/formats.md, "Resuming"). Under `dir` (the run's .tmp folder):
//   Shards format:   train/shard-NNNNN.bin, S tokens each: written as .bin.tmp, synced, recorded
//                    (with its sha256) by the checkpoint and only then renamed, so a .bin name
//                    always holds a complete shard that the progress file knows
//   Megatron format: train/data_text_document.bin, one growing file
//   both:            doc-starts.u64, the stream offset (little-endian uint64) of every document's
//                    first token
// Every S tokens (S = shard_tokens) the data is synced and on_checkpoint() runs; a crash after it
// loses nothing before that point, and a resumed TokenStream cuts the files back to it. A crash
// between a checkpoint and the rename of its shard leaves the shard recorded but still named
// .bin.tmp: settle_recorded_shards() finishes the rename once the shard's sha256 matches.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data_pipeline/out_file.h"
#include "framework/sha256.h"

namespace moe {

enum class OutputFormat { Shards, Megatron };

// What the checkpoints made durable (recorded in the progress file).
struct StreamState {
  int64_t tokens = 0;
  int64_t doc_starts = 0;
  // Of each complete stream shard (Shards format), the last, shorter one included. (Files written
  // by earlier versions may hold "" for the last one; finishing hashes it then.)
  std::vector<std::string> shard_sha256;
};

// "shard-00007.bin" for (7, ".bin").
std::string shard_name(int64_t k, const char* ext);
// The Megatron pair's base name in each split folder (Megatron-LM's own preprocess_data.py default
// for --json-keys text: <prefix>_text_document).
inline constexpr const char* kMegatronName = "data_text_document";

class TokenStream {
 public:
  // Called at each checkpoint with the durable state and how many tokens of the unit being
  // appended (counting its `unit_done`) are in it. It must make the state durable (the progress
  // file): the shard it completes is renamed into place after it returns. If it throws (a test's
  // crash point), the shard stays .bin.tmp.
  using Checkpoint = std::function<void(const StreamState&, int64_t unit_tokens)>;
  // Records the final state, as Checkpoint does.
  using Record = std::function<void(const StreamState&)>;

  // Continues the stream from `from` (a fresh one from {}); `width` is 2 or 4 bytes per token.
  TokenStream(std::string dir, OutputFormat format, int width, int64_t shard_tokens, StreamState from,
              Checkpoint on_checkpoint);
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;

  // Appends the tokens of one unit (a document or a piece of one). doc_start: ids[0] starts a
  // document. unit_done: tokens of this unit already in the stream (a resumed unit).
  void append(const uint32_t* ids, size_t n, bool doc_start, int64_t unit_done);
  // The end of the input: makes all of it durable (the last, shorter shard too), calls `record`
  // with the final state, then renames the last shard into place.
  StreamState finish(const Record& record);
  int64_t tokens() const { return state_.tokens + pending_; }

 private:
  void checkpoint(const Record& record);
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
  Sha256 sha_;  // of the shard being written (Shards format)
  std::vector<uint8_t> buf_;
};

// Completes the renames that a crash between a checkpoint and its rename left undone: each shard
// that `state` records but that exists only as train/shard-NNNNN.bin.tmp under `dir` is renamed to
// .bin if its sha256 is the recorded one (else a moe::Error says the file is damaged). Shards
// format only; run before TokenStream or finishing opens a resumed folder.
void settle_recorded_shards(const std::string& dir, const StreamState& state);

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
