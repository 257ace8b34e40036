// The packed-token shard format (docs/formats.md). A preprocessed folder holds one sub-folder per
// split (`train/`, `val/`), each with:
//   manifest.json      format (shards | megatron), tokenizer name + hash, vocab_size, token dtype
//                      (u16 | u32, megatron: u16 | i32), documents, tokens, text bytes, and per
//                      file: name, tokens, documents, sha256 of .bin and .idx
//   shard-00000.bin    little-endian token ids, documents separated by the tokenizer's EOS id
//   shard-00000.idx    little-endian uint64 document start offsets (in tokens) within the shard,
//                      followed by the shard's token count
// or, for --format megatron, data_text_document.{bin,idx}: a Megatron-LM pair (megatron.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

// A read-only, memory-mapped split. open() validates the manifest and that every shard's size
// matches it (cheap); verify() additionally checks sha256s (what `moe inspect` does).
class TokenDataset {
 public:
  // `dir` is a split folder (has manifest.json), a preprocessed folder plus `split`, or a bare
  // Megatron-LM pair (PREFIX, PREFIX.bin/.idx, or a folder holding pairs): that is the train split,
  // other splits of it are empty; it has no tokenizer name, and vocab_size() is its largest id + 1.
  static TokenDataset open(const std::string& dir, const std::string& split = "train");
  ~TokenDataset();
  TokenDataset(TokenDataset&&) noexcept;
  TokenDataset& operator=(TokenDataset&&) noexcept;

  int64_t num_tokens() const;             // over all shards
  uint32_t token(int64_t i) const;        // global index across shards
  // Copies tokens [begin, begin+n) (may span shards) widened to int32.
  void read(int64_t begin, int64_t n, int32_t* out) const;
  // start[i] for each token begin+i of [begin, begin+n): the offset from `begin` where its document
  // starts, clipped to 0 (documents from the index files: shard pieces joined where a shard
  // boundary cut a document, or Megatron's document index). Read lazily on the first call.
  void document_starts(int64_t begin, int64_t n, int32_t* start) const;
  int64_t vocab_size() const;
  const std::string& tokenizer_name() const;
  const std::string& tokenizer_hash() const;
  const std::string& dir() const;
  const nlohmann::json& manifest() const;
  void verify() const;  // throws moe::Error naming the shard whose checksum differs

 private:
  TokenDataset();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Deterministic sampler of [B, T+1] windows. The split is cut into n = (tokens-1)/T windows at
// stride T; each epoch visits them in a permutation keyed by (seed, epoch). Global sample g
// (g = step * global_batch + i) is window perm_{g / n}[g % n], so a batch is a pure function of
// (seed, step, rank, world) and resuming needs only the step.
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& data, int seq_len, uint64_t seed);
  int64_t windows_per_epoch() const;
  // Fills tokens[B*(T+1)] with global samples [first_sample, first_sample + B), and with doc_start
  // (may be null) [B*T] where each input token's document starts within its window.
  void fill(int64_t first_sample, int B, int32_t* tokens, int32_t* doc_start = nullptr) const;

 private:
  const TokenDataset* data_;
  int seq_len_;
  uint64_t seed_;
  int64_t windows_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

struct PreprocessOptions {
  std::vector<std::string> inputs;  // files or folders (.txt; .jsonl with text_key; either as .gz or .zst)
  std::string tokenizer = "byte";
  std::string output;
  std::string text_key = "text";
  double val_fraction = 0.05;
  int workers = 0;  // 0 = all cores
  bool overwrite = false;
  int64_t shard_tokens = 1 << 28;  // tokens per shard (and between checkpoints)
  bool split_docs = false;         // .txt: blank-line-separated documents, not one per file
  bool skip_bad_lines = false;     // count malformed .jsonl lines instead of failing on the first
  std::string format = "shards";   // shards | megatron
  std::string dtype = "auto";      // token ids on disk: auto | u16 | u32 (i32 for megatron)
  double progress_seconds = -1;    // between progress lines on stderr; < 0 auto, 0 none
  // Tests: fail as a crash would (leaving the .tmp folder) right after this many checkpoints (the
  // end of the input and the val split, once written, count as one each).
  int64_t crash_after_checkpoints = 0;
};

// Writes output/train and output/val (docs/formats.md), resuming an interrupted run with the same
// arguments. Returns the summary (documents, tokens per split, bad lines, invalid UTF-8, seconds).
nlohmann::json preprocess(const PreprocessOptions& opt);

}  // namespace moe
