// The last step of preprocess: the finished token stream (token_stream.h) becomes the two split
// folders, `train` (the stream's head) and `val` (its last tokens), each with its indexes and a
// manifest.json (docs/formats.md). One function per output format; each may be run again after a
// crash and gives the same files.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "data_pipeline/token_stream.h"

namespace moe {

struct ShardHeader {
  std::string tokenizer;       // Tokenizer::name()
  std::string tokenizer_hash;  // Tokenizer::hash()
  int64_t vocab_size = 0;
  uint32_t eos_id = 0;
  int width = 2;  // bytes per token on disk
};

// Bytes per token on disk by default: 2 when every id fits uint16, else 4.
int token_width(int64_t vocab_size);

// What finishing needs besides the stream. val_record is what an earlier, interrupted finish
// stored through save_val once the val split was complete (null the first time): the val files are
// then kept as they are, because the train side of the stream may already be cut.
struct FinishInput {
  std::string dir;  // the run's .tmp folder
  ShardHeader header;
  int64_t shard_tokens = 0;
  StreamState stream;
  int64_t cut = 0;          // val = stream tokens [cut, stream.tokens)
  uint64_t text_bytes = 0;  // of the whole corpus; the val share is counted from its tokens
  // Text bytes of a run of tokens (EOS ids count 0): the tokenizer's decode, in effect.
  std::function<uint64_t(const uint32_t*, size_t)> bytes_of;
  const nlohmann::json* val_record = nullptr;
  std::function<void(const nlohmann::json&)> save_val;
};

// Shards format: writes dir/val/shard-*.{bin,idx}, cuts dir/train to the cut, writes its .idx files
// and both manifests. Returns {train manifest, val manifest}.
std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish_shards(const FinishInput& in);

// One split's manifest.json (written atomically); `files` lists {file, tokens, documents,
// sha256_bin, sha256_idx} in stream order.
nlohmann::ordered_json write_manifest(const std::string& split_dir, const char* split, const char* format,
                                      const ShardHeader& h, const char* dtype, uint64_t bytes,
                                      nlohmann::ordered_json files);

// Reads tokens [lo, hi) of width-byte little-endian ids from `path` (token offset `first` at byte 0)
// in chunks, calling fn(ids, n) on each.
void read_tokens(const std::string& path, int width, int64_t first, int64_t lo, int64_t hi,
                 const std::function<void(const uint32_t*, size_t)>& fn);

}  // namespace moe
